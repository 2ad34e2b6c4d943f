"""The UCF-101 recipes (paper A.5, docs/metrics.md): fine-tune a video classifier on a split's training videos,
test it on its test videos.

The paper follows the fine-tuning of Wu & Wang's CycleContrast [9], "based on" AVID-CMA [86]. Both recipes
train 16 epochs with Adam (lr 1e-4, ``--lr``; no weight decay), the lr multiplied by ``lr_drop`` after epochs 6,
10 and 14, and test on the mean softmax over each video's ``--test-clips`` clips (10), top-1 and top-5:

- ``cyclecontrast`` (default): CycleContrast's ResNet-50 run (``configs/benchmark/ucf/
  32at16-fold1-r50-4gpu-drop09.yaml``, started by ``scripts/submit_cycle_r50_r2v2.sh``): 5 random clips of
  every video per epoch, batches of 32 clips, lr ×0.3 at each drop, crops of 8-100 % of the area with a flip
  and a colour jitter (0.4, 0.4, 0.4, 0.2), dropout 0.9 before the classifier, and first 5 epochs of the
  classifier alone (AVID-CMA's ``warmup_classifier``, its default length). AVID-CMA's own 2-s configs differ
  only in the dropout (0.5). docs/metrics.md lists every value with its file.
- ``vito-v1``: vito's earlier recipe: 1 clip per video per epoch, batches of 8, ×0.1, crop and flip only, no
  dropout, no warm-up.

``--batch-size``, ``--train-clips``, ``--dropout`` and ``--warmup-epochs`` override the recipe's value.

Training runs in the shared fine-tune loop (``vito.engine.finetune``: the run folder and its lock, stop
signals, checkpoints of format ``vito-ucf101/1``, ``--resume``, reuse of a finished run with the same settings,
torchrun DDP, bf16 autocast on CUDA, the non-finite check, ``metrics.jsonl``, TensorBoard). With a classifier
warm-up the fine-tune has two phases, each a run of that loop: ``OUT/runs/split{N}_warmup/`` trains the temporal
head and classifier alone at the constant lr with an Adam of their own (the backbone takes no gradient, its
batch norms still follow the batches, as in AVID-CMA), then ``OUT/runs/split{N}/`` trains everything with a
fresh Adam from the warm-up's weights, its data stream continuing where the warm-up's ended. The loop counts
steps, so epochs are converted: an epoch is ``videos × train_clips / batch`` steps of the endless stream of
per-epoch permutations (``ucf101_data.TrainingClips``), and the run lengths and the lr milestones are epochs ×
that, rounded. Every step is logged, so the Result's per-epoch loss (the mean over an epoch's steps) is read back
from ``metrics.jsonl``, the same for a run resumed or reused as for one never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from vito.engine import distributed
from vito.engine.checkpoint import seed_all
from vito.engine.finetune import FinetuneResult, FinetuneSpec, finetune, make_loader
from vito.engine.progress import progress
from vito.engine.run_files import METRICS_FILE
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import collate_readable
from vito.eval.video.temporal_heads import VideoClassifier
from vito.eval.video.ucf101_data import CLIP_FPS, CLIP_SECONDS, TrainingClips, UCF101Clips

if TYPE_CHECKING:  # the Settings of the evaluation, which imports this module
    from vito.eval.video.ucf101 import UCF101Settings

CHECKPOINT_FORMAT = "vito-ucf101/1"
MILESTONES = (6, 10, 14)  # epochs after which the learning rate is multiplied by the recipe's lr_drop
CYCLECONTRAST_CONFIG = "happywu/AVID-CMA-CycleContrast configs/benchmark/ucf/32at16-fold1-r50-4gpu-drop09.yaml"


@dataclass(frozen=True)
class Recipe:
    """What a UCF-101 recipe fixes beyond the paper's epochs, lr and milestones."""

    name: str
    train_clips: int  # random clips of every training video per epoch
    batch_size: int  # clips per step, over all processes
    lr_drop: float  # the lr's factor at each milestone
    color_jitter: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue; None: none
    dropout: float  # before the classifier
    warmup_epochs: int  # epochs of the classifier alone before the whole network (fine-tune mode)
    source: str


RECIPES = {
    "cyclecontrast": Recipe("cyclecontrast", train_clips=5, batch_size=32, lr_drop=0.3,
                            color_jitter=(0.4, 0.4, 0.4, 0.2), dropout=0.9, warmup_epochs=5,
                            source=f"{CYCLECONTRAST_CONFIG} (AVID-CMA's protocol; paper A.5), `vito docs metrics`"),
    "vito-v1": Recipe("vito-v1", train_clips=1, batch_size=8, lr_drop=0.1, color_jitter=None, dropout=0.0,
                      warmup_epochs=0, source="vito's recipe before issue 24, docs/metrics.md"),
}
OVERRIDABLE = ("batch_size", "train_clips", "dropout", "warmup_epochs")  # Settings fields of the same names


def resolve_recipe(settings: UCF101Settings) -> Recipe:
    """The settings' recipe with their overrides; frozen mode has no warm-up (it trains the classifier alone)."""
    recipe = RECIPES[settings.recipe]
    changes = {name: getattr(settings, name) for name in OVERRIDABLE if getattr(settings, name) is not None}
    if settings.mode == "frozen":
        if changes.get("warmup_epochs"):
            raise VitoError("--warmup-epochs trains the classifier alone before the fine-tune; --mode frozen "
                            "trains it alone throughout")
        changes["warmup_epochs"] = 0
    recipe = dataclasses.replace(recipe, **changes)
    for name, ok in (("batch_size", recipe.batch_size >= 1), ("train_clips", recipe.train_clips >= 1),
                     ("dropout", 0 <= recipe.dropout < 1), ("warmup_epochs", recipe.warmup_epochs >= 0)):
        if not ok:
            limits = {"dropout": "in [0, 1)", "warmup_epochs": "at least 0"}.get(name, "at least 1")
            raise VitoError(f"--{name.replace('_', '-')} must be {limits}, not {getattr(recipe, name)}")
    return recipe


@dataclass(frozen=True)
class Schedule:
    """A phase's epochs in steps: how many steps, the steps from which the lr drops, where epochs end."""

    lr: float
    epochs: int
    steps_per_epoch: float  # samples (videos x clips per video) / batch
    steps: int
    drops: tuple[int, ...]
    lr_drop: float

    @classmethod
    def of(cls, samples: int, batch: int, epochs: int, lr: float, lr_drop: float,
           milestones: tuple[int, ...] = MILESTONES) -> Schedule:
        per_epoch = samples / batch
        return cls(lr, epochs, per_epoch, max(1, round(epochs * per_epoch)),
                   tuple(round(m * per_epoch) for m in milestones), lr_drop)

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        return self.lr * self.lr_drop ** sum(step >= drop for drop in self.drops)

    def epoch_end(self, epoch: int) -> int:
        """Steps done when epoch ``epoch`` (0-based) ends."""
        return self.steps if epoch + 1 == self.epochs else min(self.steps, round((epoch + 1) * self.steps_per_epoch))


def run_config(encoder: Encoder, settings: UCF101Settings, recipe: Recipe, split: int, videos: int,
               classes: int) -> dict[str, Any]:
    """Everything that decides what a fine-tune learns: its identity in the run folder (test clips, workers and
    checkpointing may change; the run is then reused or continued). Recipe values that vito-v1 did not have
    appear only where they differ from vito-v1's, so runs made before the recipes existed stay reusable."""
    config = {
        "evaluation": "ucf101", "root": str(Path(settings.root).resolve()),
        "splits": str(Path(settings.splits).resolve()), "split": split, "videos": videos, "num_classes": classes,
        "encoder": encoder.fingerprint, "encoder_name": encoder.name, "pooling": settings.pooling,
        "mode": settings.mode, "epochs": settings.epochs, "lr": settings.lr, "milestones": list(MILESTONES),
        "batch_size": recipe.batch_size, "image_size": settings.image_size, "clip_seconds": CLIP_SECONDS,
        "fps": CLIP_FPS, "max_videos": settings.max_videos, "seed": settings.seed,
    }
    before = RECIPES["vito-v1"]
    for name in ("train_clips", "lr_drop", "color_jitter", "dropout", "warmup_epochs"):
        if getattr(recipe, name) != getattr(before, name):
            config[name] = getattr(recipe, name)
    return config


def clip_loss(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Cross-entropy of the clips' logits (one clip per video)."""
    return {"loss": F.cross_entropy(model(batch["clips"]).float(), batch["labels"])}


@dataclass(frozen=True)
class Phase:
    """One run of the fine-tune loop: its name, folder and schedule."""

    name: str
    run_dir: Path
    schedule: Schedule


@dataclass
class Trained:
    """What the fine-tune left besides the model's weights: its phases and the training videos it skipped."""

    phases: list[Phase]
    skipped: list[tuple[str, str]]


def finetune_classifier(model: VideoClassifier, videos: UCF101Clips, settings: UCF101Settings, recipe: Recipe,
                        run_dir: Path, config: dict[str, Any], precision: str,
                        context: distributed.Context) -> Trained:
    """Train ``model`` on ``videos`` in ``run_dir`` (after the classifier warm-up in ``<run_dir>_warmup``, when the
    recipe has one) with the shared fine-tune loop, or reuse / continue the runs there; a stop signal raises
    ``FinetuneStopped`` after the checkpoint."""
    samples = len(videos) * recipe.train_clips
    phases, results, first = [], [], 0
    if recipe.warmup_epochs > 0:
        warmup = Phase("classifier warm-up", run_dir.with_name(f"{run_dir.name}_warmup"),
                       Schedule.of(samples, recipe.batch_size, recipe.warmup_epochs, settings.lr, 1.0, ()))
        with classifier_alone(model):
            results.append(_run_phase(model, videos, settings, recipe, warmup, {**config, "phase": warmup.name}, 0,
                                      precision, context))
        phases.append(warmup)
        first = warmup.schedule.steps * recipe.batch_size  # the fine-tune's stream continues after the warm-up's
        seed_all(settings.seed)  # one RNG state at the fine-tune's start, whether the warm-up ran now or before
    main = Phase("fine-tune", run_dir, Schedule.of(samples, recipe.batch_size, settings.epochs, settings.lr,
                                                   recipe.lr_drop))
    results.append(_run_phase(model, videos, settings, recipe, main, config, first, precision, context))
    phases.append(main)
    skipped = dict(item for result in results for item in result.skipped)
    return Trained(phases, sorted(dict(distributed.gather_objects(list(skipped.items()))).items()))


@contextlib.contextmanager
def classifier_alone(model: VideoClassifier) -> Iterator[None]:
    """The backbone takes no gradient while inside (its batch norms still follow the batches in train mode)."""
    model.backbone.requires_grad_(False)
    try:
        yield
    finally:
        model.backbone.requires_grad_(not model.frozen)


def _run_phase(model: VideoClassifier, videos: UCF101Clips, settings: UCF101Settings, recipe: Recipe, phase: Phase,
               config: dict[str, Any], first: int, precision: str, context: distributed.Context) -> FinetuneResult:
    """One phase in the shared loop, with an Adam of its own over the parameters that learn in it."""
    schedule = phase.schedule
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=schedule.lr)

    def batches(start: int):
        return make_loader(TrainingClips(videos, recipe.batch_size, settings.seed, start, context.rank,
                                         context.world_size, recipe.train_clips, first), settings.num_workers)

    spec = FinetuneSpec(format=CHECKPOINT_FORMAT, iterations=schedule.steps,
                        config={**config, "steps": schedule.steps}, checkpoint_every=settings.checkpoint_every,
                        log_every=1, precision=precision, description=f"UCF-101 split {config['split']} {phase.name}",
                        loggers=tuple(settings.loggers))
    result = finetune(model, clip_loss, optimizer, schedule.lr_at, batches, phase.run_dir, spec, context,
                      resume=settings.resume, overwrite=settings.overwrite)
    result.raise_if_stopped()
    return result


def epoch_history(phases: list[Phase]) -> list[dict[str, Any]]:
    """Per phase and epoch: the mean loss of its steps (from ``metrics.jsonl``) and the learning rate after it."""
    rows = []
    for phase in phases:
        lines = (phase.run_dir / METRICS_FILE).read_text().splitlines()
        losses = {record["step"]: record["loss"] for record in map(json.loads, filter(str.strip, lines))}
        start, schedule = 0, phase.schedule
        for epoch in range(schedule.epochs):
            end = schedule.epoch_end(epoch)
            steps = [losses[step] for step in range(start + 1, end + 1) if step in losses]
            if steps:
                rows.append({"phase": phase.name, "epoch": epoch + 1, "loss": float(np.mean(steps)),
                             "lr": schedule.lr_at(end)})
            start = end
    return rows


@torch.no_grad()
def score_classifier(model: VideoClassifier, videos: UCF101Clips, batch_size: int, num_workers: int,
                     precision: str, context: distributed.Context) -> dict[str, Any]:
    """Top-1/top-5 of the mean softmax over each video's test clips; each process tests its share of the videos."""
    model.eval()
    share = Subset(videos, range(context.rank, len(videos), context.world_size))
    loader = DataLoader(share, batch_size=max(1, batch_size // 4), shuffle=False,
                        num_workers=distributed.worker_count(num_workers), collate_fn=collate_readable)
    scored, skipped = [], []
    with inference_mode(context.device, precision):
        for clips, labels, bad in progress(loader, desc="UCF-101 test", unit="batch", enabled=context.is_main):
            skipped += bad
            if clips is None:
                continue
            batch, num_clips = clips.shape[:2]
            logits = model(clips.flatten(0, 1).to(context.device)).float()
            scored.append((logits.softmax(dim=1).view(batch, num_clips, -1).mean(dim=1).cpu(), labels))
    scored, skipped = distributed.gather_objects(scored), distributed.gather_objects(skipped)
    if not scored:
        raise DataError("no test video could be read")
    probs, labels = torch.cat([p for p, _ in scored]), torch.cat([y for _, y in scored])
    top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return {"top1": (top5[:, 0] == labels).float().mean().item(),
            "top5": (top5 == labels[:, None]).any(dim=1).float().mean().item(),
            "videos": len(labels), "skipped_videos": skipped}
