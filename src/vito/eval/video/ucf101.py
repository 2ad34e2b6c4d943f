"""``vito eval ucf101``: UCF-101 action recognition with an image encoder applied frame by frame (paper §4,
docs/metrics.md).

Per split: the encoder, with a temporal integration of its per-frame features (``temporal_heads``), is fine-tuned
(or, ``--mode frozen``, only its head is trained) on the split's training list with the ``--recipe`` (CycleContrast's,
by default, or vito's earlier one), then tested on its test list (``ucf101_recipe``; the split files and clips:
``ucf101_data``). Several splits are reported with their mean and sd. Each split's fine-tune keeps a run folder
``OUT/runs/split{N}/`` (and ``OUT/runs/split{N}_warmup/`` for the classifier warm-up): a stopped one continues
with ``--resume``, a finished one is reused by a rerun with the same settings, other settings there need
``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vito.engine import distributed
from vito.engine.checkpoint import seed_all
from vito.engine.loggers import LoggerSettings
from vito.errors import DataError, VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result, mean_and_sd
from vito.eval.video.temporal_heads import VideoClassifier
from vito.eval.video.ucf101_data import (
    CLIP_FPS,
    CLIP_SECONDS,
    UCF101Clips,
    VideoEntry,
    present_entries,
    read_class_names,
    read_split,
)
from vito.eval.video.ucf101_recipe import (
    MILESTONES,
    epoch_history,
    finetune_classifier,
    resolve_recipe,
    run_config,
    score_classifier,
)
from vito.io import atomic_write


@dataclass
class UCF101Settings(LoggerSettings):
    root: Path = field(default=None, metadata={"help": "UCF-101 videos (root/<Class>/v_*.avi)",
                                               "cli": {"required": True}})
    splits: Path = field(default=None, metadata={
        "help": "folder with classInd.txt, trainlist0N.txt, testlist0N.txt", "cli": {"required": True}})
    split: list[int] = field(default_factory=lambda: [1], metadata={
        "help": "split(s) to run; several (e.g. 1 2 3) are reported with their mean and sd",
        "cli": {"choices": [1, 2, 3]}})
    pooling: Literal["avg", "ms-avg", "ms-attn"] = field(default="avg", metadata={"help": "temporal integration"})
    mode: Literal["finetune", "frozen"] = field(default="finetune", metadata={
        "help": "finetune the encoder, or train only the temporal head and classifier"})
    recipe: Literal["cyclecontrast", "vito-v1"] = field(default="cyclecontrast", metadata={
        "help": "cyclecontrast: CycleContrast's run of AVID-CMA's protocol, as the paper (5 clips per video per "
                "epoch, batch 32, lr x0.3, colour jitter, dropout 0.9, 5 epochs of the classifier alone); vito-v1: "
                "vito's earlier recipe (1 clip, batch 8, x0.1, crop and flip only)"})
    epochs: int = field(default=16, metadata={"help": "training epochs (after the classifier warm-up)"})
    lr: float = field(default=1e-4, metadata={
        "help": "Adam learning rate (x the recipe's drop after epochs 6, 10, 14)"})
    batch_size: int | None = field(default=None, metadata={"help": "clips per step (default: the recipe's, 32 or 8)"})
    train_clips: int | None = field(default=None, metadata={
        "help": "random clips of every training video per epoch (default: the recipe's, 5 or 1)"})
    dropout: float | None = field(default=None, metadata={
        "help": "dropout before the classifier (default: the recipe's, 0.9 or 0; AVID-CMA's configs: 0.5)"})
    warmup_epochs: int | None = field(default=None, metadata={
        "help": "epochs of the classifier alone before the whole network (default: the recipe's, 5 or 0)"})
    num_workers: int = field(default=4, metadata={"help": "video-decoding worker processes"})
    image_size: int = field(default=224, metadata={"help": "frame side after cropping"})
    test_clips: int = field(default=10, metadata={"help": "clips averaged per test video"})
    max_videos: int | None = field(default=None, metadata={
        "help": "only the first N videos of each list (quick runs; the Result is then flagged partial)"})
    seed: int = field(default=0, metadata={"help": "initialisation, shuffling and crops"})
    resume: bool = field(default=False, metadata={"help": "continue stopped fine-tunes in OUT/runs/"})
    overwrite: bool = field(default=False, metadata={"help": "replace the fine-tunes in OUT/runs/ (other settings)"})
    checkpoint_every: int = field(default=1000, metadata={"help": "checkpoint every N steps"})


@dataclass(frozen=True)
class SplitInputs:
    """One split's classes and videos, read and checked before any split trains."""

    split: int
    names: list[str]
    listed_train: int
    listed_test: int
    train: list[VideoEntry]
    train_missing: list[tuple[str, str]]
    test: list[VideoEntry]
    test_missing: list[tuple[str, str]]


def read_split_inputs(settings: UCF101Settings, split: int) -> SplitInputs:
    """A split's class list and the listed videos present under ``--root`` (a DataError when none is). Every split
    of ``--split 1 2 3`` is read first: split 3 without videos fails at once, not after splits 1 and 2 trained."""
    root = Path(settings.root)
    if not root.is_dir():
        raise DataError(f"UCF-101 video folder not found: {root}")
    names = read_class_names(settings.splits)
    listed_train = read_split(settings.splits, split, "train")
    listed_test = read_split(settings.splits, split, "test")
    try:
        train, train_missing = present_entries(root, listed_train[: settings.max_videos], "train")
        test, test_missing = present_entries(root, listed_test[: settings.max_videos], "test")
    except DataError as error:
        raise DataError(f"UCF-101 split {split}: {error}") from None
    return SplitInputs(split, names, len(listed_train), len(listed_test), train, train_missing, test, test_missing)


def run_ucf101(encoder: Encoder, settings: UCF101Settings, inputs: SplitInputs, out_dir: Path) -> dict[str, Any]:
    """Fine-tune (or train a head on a frozen encoder) on a split's training list, test on its test list.

    Returns accuracies, counts, skipped videos and the loss history; saves ``OUT/classifier_split{N}.pt``.
    """
    device = next(encoder.parameters()).device
    context = distributed.setup("cuda" if device.type == "cuda" else "cpu")
    root, split, names = Path(settings.root), inputs.split, inputs.names
    train_entries, test_entries = inputs.train, inputs.test
    recipe = resolve_recipe(settings)
    seed_all(settings.seed)
    model = VideoClassifier(encoder, settings.pooling, len(names), frozen=settings.mode == "frozen",
                            dropout=recipe.dropout).to(context.device)
    started = time.perf_counter()
    videos = UCF101Clips(root, train_entries, True, settings.image_size, seed=settings.seed,
                         color_jitter=recipe.color_jitter)
    training = finetune_classifier(model, videos, settings, recipe, Path(out_dir) / "runs" / f"split{split}",
                                   run_config(encoder, settings, recipe, split, len(train_entries), len(names)),
                                   encoder.precision, context)
    testing = score_classifier(model, UCF101Clips(root, test_entries, False, settings.image_size, settings.test_clips),
                               recipe.batch_size, settings.num_workers, encoder.precision, context)
    if context.is_main:
        with atomic_write(Path(out_dir) / f"classifier_split{split}.pt", "wb") as handle:
            torch.save({"pool": model.pool.state_dict(), "fc": model.fc.state_dict(), "classes": names}, handle)
    return {
        "split": split, "top1": testing["top1"], "top5": testing["top5"],
        "train_videos": len(train_entries) - len(training.skipped), "test_videos": testing["videos"],
        "listed_test_videos": inputs.listed_test, "listed_train_videos": inputs.listed_train,
        "skipped_videos": {"train": [*inputs.train_missing, *training.skipped],
                           "test": [*inputs.test_missing, *testing["skipped_videos"]]},
        "history": epoch_history(training.phases) if context.is_main else [],
        "seconds": time.perf_counter() - started,
    }


@register
class UCF101(Evaluation):
    name = "ucf101"
    Settings = UCF101Settings
    group = "video"
    headline = "top1"  # top-1 (mean over the splits run), Table 1's UCF101 column
    help = "UCF-101 action recognition: fine-tune (or frozen) with temporal pooling"

    def check(self, settings: UCF101Settings, has_encoder: bool) -> None:
        super().check(settings, has_encoder)
        if settings.root is None or settings.splits is None:
            raise VitoError("vito eval ucf101 needs --root DIR and --splits DIR")
        if len(set(settings.split)) != len(settings.split):
            raise VitoError(f"--split lists a split twice: {settings.split}")
        if settings.mode not in ("finetune", "frozen"):
            raise VitoError(f"UCF-101 mode {settings.mode!r} is not 'finetune' or 'frozen'")
        for flag in ("epochs", "test_clips", "checkpoint_every"):
            if getattr(settings, flag) < 1:
                raise VitoError(f"--{flag.replace('_', '-')} must be at least 1, not {getattr(settings, flag)}")
        resolve_recipe(settings)  # its values are checked there
        if settings.resume and settings.overwrite:
            raise VitoError("--resume and --overwrite exclude each other")

    def run(self, encoder: Encoder, settings: UCF101Settings, out_dir: Path) -> Result:
        try:  # each split fine-tunes its own copy of the encoder (the encoder itself stays as it was)
            inputs = [read_split_inputs(settings, split) for split in settings.split]  # all checked first
            reports = [run_ucf101(encoder, settings, split_inputs, out_dir) for split_inputs in inputs]
        finally:
            distributed.cleanup()
        top1, top1_sd = mean_and_sd([r["top1"] for r in reports])
        metrics = {"top1": Metric(top1, "proportion", "top-1" + (" (mean over splits)" if len(reports) > 1 else "")),
                   "top5": Metric(float(np.mean([r["top5"] for r in reports])), "proportion", "top-5")}
        if len(reports) > 1:
            metrics["top1_sd"] = Metric(top1_sd, "value", "top-1 sd over splits")
            metrics.update({f"top1_split{r['split']}": Metric(r["top1"], "proportion", f"top-1 split {r['split']}")
                            for r in reports})
        used = sum(r["test_videos"] for r in reports)
        expected = sum(r["listed_test_videos"] for r in reports)
        note = f"test videos of split(s) {', '.join(map(str, settings.split))}"
        if settings.max_videos:
            note += f" (--max-videos {settings.max_videos})"
        skipped = [(path, reason) for r in reports for subset in ("train", "test")
                   for path, reason in r["skipped_videos"][subset]]
        tables = {"per split": [{k: r[k] for k in ("split", "top1", "top5", "train_videos", "test_videos", "seconds")}
                                for r in reports],
                  "loss history": [{"split": r["split"], **h} for r in reports for h in r["history"]]}
        clip = {"seconds": CLIP_SECONDS, "fps": CLIP_FPS, "test_clips": settings.test_clips,
                "image_size": settings.image_size}
        recipe = dataclasses.asdict(resolve_recipe(settings))
        return Result(self.name, metrics, {"milestones": list(MILESTONES), "clip": clip, "recipe_values": recipe},
                      Coverage(used, expected, note, training_skipped=sum(len(r["skipped_videos"]["train"])
                                                                          for r in reports)),
                      tables=tables, skipped=skipped,
                      artifacts={f"classifier_split{r['split']}": f"classifier_split{r['split']}.pt" for r in reports})
