"""UCF-101 action recognition with an image encoder applied frame by frame (paper §4, docs/metrics.md).

A clip is 2 s of video at 12 fps (24 frames); every frame goes through the encoder, and one of three
temporal integrations turns the per-frame features into one vector for a linear classifier:

* ``avg``: average of the last stage (res5) over time                                  (2048-d for R50)
* ``ms-avg``: res4 averaged over each 1-s half, both halves concatenated with the clip average of res5
  (1024 + 1024 + 2048 = 4096-d)
* ``ms-attn``: as ``ms-avg`` with every average replaced by temporal attention ``v = Σ_t tanh(W z_t) z_t``
  (one ``W`` per scale).

Training draws one random clip per video per epoch; testing averages the softmax of 10 clips whose start
times are spread uniformly over the video. Fine-tuning uses Adam (lr 1e-4, 16 epochs, ×0.1 at epochs 6,
10 and 14); the frozen mode trains only the temporal head and the classifier.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vito.data.augment import RandomResizedCropFlip
from vito.data.imagenet import CROP_FRACTION, normalize
from vito.data.video import probe_video, read_frames
from vito.engine.distributed import worker_count
from vito.engine.precision import uses_bf16
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import EvalTransform, collate_readable
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result, mean_and_sd
from vito.io import atomic_write, read_text

log = logging.getLogger(__name__)

POOLINGS = ("avg", "ms-avg", "ms-attn")


# --------------------------------------------------------------------------------------------------
# Official split files


@dataclass(frozen=True)
class VideoEntry:
    path: str  # relative to the UCF-101 root, e.g. "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    label: int  # 0-based


def read_class_names(splits_dir: str | Path) -> list[str]:
    """``classInd.txt`` (``<1-based id> <ClassName>``, CRLF) as a list indexed by 0-based label."""
    path = Path(splits_dir) / "classInd.txt"
    if not path.is_file():
        raise DataError(f"UCF-101 class index not found: {path}")
    names: dict[int, str] = {}
    for number, line in enumerate(read_text(path, "UCF-101 class index").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1 or int(parts[0]) - 1 in names:
            raise DataError(f"{path} line {number}: {line.strip()!r} is not '<1-based id> <ClassName>' with a new id")
        names[int(parts[0]) - 1] = parts[1]
    if not names or sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: the class ids must be 1..N without gaps (found {len(names)} classes)")
    return [names[i] for i in range(len(names))]


def read_split(splits_dir: str | Path, split: int, subset: str) -> list[VideoEntry]:
    """Videos of ``trainlist0{split}.txt`` or ``testlist0{split}.txt``.

    Test lines carry no label: it comes from the folder name, matched case-insensitively because the
    official files name ``HandstandPushups/v_HandStandPushups_...``.
    """
    if subset not in ("train", "test") or split not in (1, 2, 3):
        raise VitoError(f"UCF-101 has splits 1-3 with subsets train/test, not split {split} {subset!r}")
    names = read_class_names(splits_dir)
    by_folder = {name.lower(): i for i, name in enumerate(names)}
    path = Path(splits_dir) / f"{subset}list0{split}.txt"
    if not path.is_file():
        raise DataError(f"UCF-101 split file not found: {path}")
    entries, seen = [], set()
    for number, line in enumerate(read_text(path, "UCF-101 split file").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        folder = parts[0].split("/")[0].lower()
        if folder not in by_folder:
            raise DataError(f"{path}: class folder {folder!r} is not in classInd.txt")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise DataError(f"{path} line {number}: {line.strip()!r} is not '<Class>/<video> [<1-based label>]'")
        if parts[0] in seen:  # a video listed twice would be trained on or scored twice
            raise DataError(f"{path} line {number}: {parts[0]} is listed more than once")
        seen.add(parts[0])
        label = int(parts[1]) - 1 if len(parts) > 1 else by_folder[folder]
        if label != by_folder[folder]:
            raise DataError(f"{path}: {parts[0]} is labelled {label + 1}, its folder is class {by_folder[folder] + 1}")
        entries.append(VideoEntry(parts[0], label))
    if not entries:  # scored on nothing, the accuracy would be undefined (and the test loop has no batch)
        raise DataError(f"UCF-101 split file {path} lists no videos")
    return entries


# --------------------------------------------------------------------------------------------------
# Clips


@dataclass
class ClipSettings:
    seconds: float = 2.0
    fps: float = 12.0
    test_clips: int = 10
    image_size: int = 224

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))


def evaluation_clip_starts(duration: float, num_clips: int, clip_seconds: float) -> np.ndarray:
    """Start times spread uniformly from the beginning to the last start that still fits in the video."""
    return np.linspace(0.0, max(duration - clip_seconds, 0.0), num_clips)


def clip_frame_times(start: float, settings: ClipSettings) -> np.ndarray:
    return start + np.arange(settings.num_frames) / settings.fps


TRAIN_CROP_SCALE = (0.08, 1.0)


def transform_clip(
    frames: torch.Tensor, size: int, train: bool, rng: np.random.Generator | None = None
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` → normalised ``[T, 3, size, size]``, the same crop (and flip) for every frame.

    Test: the ImageNet evaluation view (``EvalTransform``: centre 224/256 crop, bicubic). Train: a random
    resized crop (area 8-100 %, aspect 3/4-4/3; the box sampler of pretraining) and a flip with probability 1/2.
    """
    clip = frames.permute(0, 3, 1, 2)
    if not train:
        return EvalTransform(size)(clip)
    rng = rng if rng is not None else np.random.default_rng()
    top, left, h, w = RandomResizedCropFlip(size, scale=TRAIN_CROP_SCALE).sample_box(*clip.shape[-2:], rng)
    clip = TF.resized_crop(clip, top, left, h, w, [size, size], antialias=True)
    if rng.random() < 0.5:
        clip = clip.flip(-1)
    return normalize(clip)


class UCF101Clips(Dataset):
    """``(clips [K, T, 3, S, S], label)``: one random clip (train) or the 10 test clips of a video.

    Unreadable videos yield ``None``; ``collate_readable`` drops and counts them.
    """

    def __init__(self, root: str | Path, entries: Sequence[VideoEntry], train: bool, settings: ClipSettings,
                 seed: int = 0) -> None:
        self.root, self.entries, self.train, self.settings, self.seed = Path(root), list(entries), train, settings, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str] | tuple[None, int, str]:
        entry = self.entries[index]
        path = self.root / entry.path
        rng = np.random.default_rng([self.seed, self.epoch, index])
        short_side = int(round(self.settings.image_size / CROP_FRACTION))
        try:
            duration = probe_video(path).duration
            if self.train:
                starts = [max(duration - self.settings.seconds, 0.0) * rng.random()]
            else:
                starts = evaluation_clip_starts(duration, self.settings.test_clips, self.settings.seconds)
            times = np.concatenate([clip_frame_times(s, self.settings) for s in starts])
            frames = read_frames(path, times, short_side=short_side)
        except DataError as error:
            log.warning("skipping %s: %s", path, error)
            return None, entry.label, str(path)
        clips = frames.view(len(starts), self.settings.num_frames, *frames.shape[1:])
        return torch.stack([transform_clip(c, self.settings.image_size, self.train, rng) for c in clips]), \
            entry.label, str(path)


# --------------------------------------------------------------------------------------------------
# Temporal integration


class TemporalAttention(nn.Module):
    """Weights over time from each frame's own feature.

    ``form="paper"``: ``w_t = tanh(W z_t)`` (W in R^{C×1}), ``v = Σ_t w_t z_t`` (VITO appendix).
    ``form="softmax"``: ``e_t = u^T tanh(W z_t)``, ``α = softmax_t(e)``, ``v = Σ_t α_t z_t`` (docs/metrics.md).
    """

    def __init__(self, channels: int, form: str = "paper", hidden: int | None = None) -> None:
        super().__init__()
        if form not in ("paper", "softmax"):
            raise VitoError(f"temporal attention form {form!r} is not 'paper' or 'softmax'")
        self.form = form
        self.proj = nn.Linear(channels, 1 if form == "paper" else (hidden or channels), bias=False)
        self.score = nn.Linear(hidden or channels, 1, bias=False) if form == "softmax" else None

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` weights for features ``[B, T, C]``."""
        if self.score is None:
            return torch.tanh(self.proj(z)).squeeze(-1)
        return self.score(torch.tanh(self.proj(z))).squeeze(-1).softmax(dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.weights(z).unsqueeze(-1) * z).sum(dim=1)


class TemporalPooling(nn.Module):
    """Per-frame stage features ``{"res4": [B, T, C4], "res5": [B, T, C5]}`` → one clip vector."""

    def __init__(self, mode: str, channels4: int, channels5: int) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise VitoError(f"pooling {mode!r} is not one of {list(POOLINGS)}")
        self.mode = mode
        self.stages = [-1] if mode == "avg" else [-2, -1]
        self.out_dim = channels5 if mode == "avg" else 2 * channels4 + channels5
        if mode == "ms-attn":
            self.attend4, self.attend5 = TemporalAttention(channels4), TemporalAttention(channels5)

    def forward(self, per_stage: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "avg":
            return per_stage[-1].mean(dim=1)
        res4, res5 = per_stage
        half = res4.shape[1] // 2
        halves = (res4[:, :half], res4[:, half:])
        if self.mode == "ms-avg":
            return torch.cat([halves[0].mean(1), halves[1].mean(1), res5.mean(1)], dim=1)
        return torch.cat([self.attend4(halves[0]), self.attend4(halves[1]), self.attend5(res5)], dim=1)


class VideoClassifier(nn.Module):
    """Encoder per frame → global average pool per stage → temporal pooling → linear classifier."""

    def __init__(self, encoder: Encoder, pooling: str, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.stage_channels()
        self.pool = TemporalPooling(pooling, channels[-2], channels[-1])
        self.fc = nn.Linear(self.pool.out_dim, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``clips [B, T, 3, H, W]`` → logits ``[B, num_classes]``."""
        batch, frames = clips.shape[:2]
        maps = self.encoder.feature_maps(clips.flatten(0, 1), self.pool.stages)
        per_stage = [m.float().mean(dim=(2, 3)).view(batch, frames, -1) for m in maps]
        return self.fc(self.pool(per_stage))


# --------------------------------------------------------------------------------------------------
# Training and testing


@dataclass
class FinetuneSettings:
    mode: str = "finetune"  # or "frozen": only the temporal head and classifier learn
    epochs: int = 16
    lr: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [6, 10, 14])
    batch_size: int = 8
    num_workers: int = 4
    seed: int = 0
    max_videos: int | None = None  # use only the first N videos of each list (quick runs)


def train_video_classifier(model: VideoClassifier, dataset: UCF101Clips, settings: FinetuneSettings,
                           device: torch.device) -> dict[str, Any]:
    """Adam with a step schedule (×0.1 at each milestone epoch); one random clip per video per epoch."""
    frozen = settings.mode == "frozen"
    model.encoder.requires_grad_(not frozen)
    if model.encoder.network is not None:
        model.encoder.network.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=settings.milestones, gamma=0.1)
    history, skipped = [], set()
    for epoch in range(settings.epochs):
        dataset.epoch = epoch
        model.train()
        if frozen:
            model.encoder.eval()  # frozen = inference-mode batch-norm statistics too
        loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True,
                            num_workers=worker_count(settings.num_workers),
                            collate_fn=collate_readable, generator=torch.Generator().manual_seed(settings.seed + epoch))
        losses = []
        for clips, labels, bad in tqdm(loader, desc=f"UCF-101 epoch {epoch + 1}/{settings.epochs}", unit="batch"):
            skipped.update(bad)
            if clips is None:
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device)):
                logits = model(clips[:, 0].to(device, non_blocking=True))
            loss = F.cross_entropy(logits.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if not losses:
            raise DataError(f"no training video could be read under {dataset.root} ({len(skipped)} unreadable: "
                            f"{sorted(skipped)[:3]})")
        schedule.step()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "lr": optimizer.param_groups[0]["lr"]})
    model.eval()
    return {"history": history, "skipped_videos": sorted(skipped)}  # (path, reason) pairs


@torch.no_grad()
def evaluate_video_classifier(model: VideoClassifier, dataset: UCF101Clips, settings: FinetuneSettings,
                          device: torch.device) -> dict[str, Any]:
    """Top-1/top-5 of the mean softmax over each video's test clips."""
    model.eval()
    loader = DataLoader(dataset, batch_size=max(1, settings.batch_size // 4), shuffle=False,
                        num_workers=worker_count(settings.num_workers), collate_fn=collate_readable)
    probabilities, targets, skipped = [], [], []
    with inference_mode(device, model.encoder.precision):
        for clips, labels, bad in tqdm(loader, desc="UCF-101 test", unit="batch"):
            skipped += bad
            if clips is None:
                continue
            batch, num_clips = clips.shape[:2]
            logits = model(clips.flatten(0, 1).to(device)).float()
            probabilities.append(logits.softmax(dim=1).view(batch, num_clips, -1).mean(dim=1).cpu())
            targets.append(labels)
    if not probabilities:
        raise DataError("no test video could be read")
    probs, labels = torch.cat(probabilities), torch.cat(targets)
    top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return {"top1": (top5[:, 0] == labels).float().mean().item(),
            "top5": (top5 == labels[:, None]).any(dim=1).float().mean().item(),
            "videos": len(labels), "skipped_videos": skipped}


def present_entries(root: Path, entries: Sequence[VideoEntry], subset: str) -> tuple[list[VideoEntry], list]:
    """The listed videos that exist under ``root`` and the (path, reason) of those that do not.

    None present is an error at once: a root that lacks the listed videos must not cost an epoch of skips.
    """
    present = [e for e in entries if (root / e.path).is_file()]
    missing = [(str(root / e.path), "file not found") for e in entries if not (root / e.path).is_file()]
    if entries and not present:
        raise DataError(f"no {subset}ing video could be read under {root}: none of the {len(entries)} listed "
                        f"files exists (e.g. {entries[0].path}); see docs/datasets.md for the layout")
    if missing:
        log.warning("UCF-101: %d of %d listed %s videos are missing under %s; evaluating the others",
                    len(missing), len(entries), subset, root)
    return present, missing


def run_ucf101(
    encoder: Encoder, root: str | Path, splits_dir: str | Path, split: int, pooling: str, out_dir: str | Path,
    settings: FinetuneSettings | None = None, clips: ClipSettings | None = None, device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Fine-tune (or train a head on a frozen encoder) on a split's training list, test on its test list.

    Returns accuracies, counts, skipped videos and the loss history; saves ``OUT/classifier_split{N}.pt``.
    """
    settings, clips = settings or FinetuneSettings(), clips or ClipSettings()
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    if settings.mode not in ("finetune", "frozen"):
        raise VitoError(f"UCF-101 mode {settings.mode!r} is not 'finetune' or 'frozen'")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"UCF-101 video folder not found: {root}")
    names = read_class_names(splits_dir)
    listed_train = read_split(splits_dir, split, "train")
    listed_test = read_split(splits_dir, split, "test")
    train_entries, train_missing = present_entries(root, listed_train[: settings.max_videos], "train")
    test_entries, test_missing = present_entries(root, listed_test[: settings.max_videos], "test")
    torch.manual_seed(settings.seed)
    model = VideoClassifier(encoder, pooling, len(names)).to(device)
    started = time.perf_counter()
    training = train_video_classifier(model, UCF101Clips(root, train_entries, True, clips, settings.seed),
                                      settings, device)
    testing = evaluate_video_classifier(model, UCF101Clips(root, test_entries, False, clips), settings, device)
    with atomic_write(Path(out_dir) / f"classifier_split{split}.pt", "wb") as handle:
        torch.save({"pool": model.pool.state_dict(), "fc": model.fc.state_dict(), "classes": names}, handle)
    return {
        "split": split, "top1": testing["top1"], "top5": testing["top5"],
        "train_videos": len(train_entries) - len(training["skipped_videos"]), "test_videos": testing["videos"],
        "listed_test_videos": len(listed_test), "listed_train_videos": len(listed_train),
        "skipped_videos": {"train": [*train_missing, *training["skipped_videos"]],
                           "test": [*test_missing, *testing["skipped_videos"]]},
        "history": training["history"], "seconds": time.perf_counter() - started,
    }


FINETUNE, CLIPS = FinetuneSettings(), ClipSettings()


@dataclass
class UCF101Settings:
    root: Path = field(default=None, metadata={"help": "UCF-101 videos (root/<Class>/v_*.avi)",
                                               "cli": {"required": True}})
    splits: Path = field(default=None, metadata={
        "help": "folder with classInd.txt, trainlist0N.txt, testlist0N.txt", "cli": {"required": True}})
    split: list[int] = field(default_factory=lambda: [1], metadata={
        "help": "split(s) to run; several (e.g. 1 2 3) are reported with their mean and sd",
        "cli": {"choices": [1, 2, 3]}})
    pooling: Literal["avg", "ms-avg", "ms-attn"] = field(default="avg", metadata={"help": "temporal integration"})
    mode: Literal["finetune", "frozen"] = field(default=FINETUNE.mode, metadata={
        "help": "finetune the encoder, or train only the temporal head and classifier"})
    epochs: int = field(default=FINETUNE.epochs, metadata={"help": "training epochs"})
    lr: float = field(default=FINETUNE.lr, metadata={"help": "Adam learning rate (x0.1 at epochs 6, 10, 14)"})
    batch_size: int = field(default=FINETUNE.batch_size, metadata={"help": "clips per step"})
    num_workers: int = field(default=FINETUNE.num_workers, metadata={"help": "video-decoding worker processes"})
    image_size: int = field(default=CLIPS.image_size, metadata={"help": "frame side after cropping"})
    test_clips: int = field(default=CLIPS.test_clips, metadata={"help": "clips averaged per test video"})
    max_videos: int | None = field(default=FINETUNE.max_videos, metadata={
        "help": "only the first N videos of each list (quick runs; the Result is then flagged partial)"})
    seed: int = field(default=FINETUNE.seed, metadata={"help": "initialisation, shuffling and crops"})


@register
class UCF101(Evaluation):
    name = "ucf101"
    Settings = UCF101Settings
    group = "video"
    help = "UCF-101 action recognition: fine-tune (or frozen) with temporal pooling"

    def check(self, settings: UCF101Settings, has_encoder: bool) -> None:
        super().check(settings, has_encoder)
        if settings.root is None or settings.splits is None:
            raise VitoError("vito eval ucf101 needs --root DIR and --splits DIR")
        if len(set(settings.split)) != len(settings.split):
            raise VitoError(f"--split lists a split twice: {settings.split}")

    def run(self, encoder: Encoder, settings: UCF101Settings, out_dir: Path) -> Result:
        finetune = FinetuneSettings(mode=settings.mode, epochs=settings.epochs, lr=settings.lr,
                                    batch_size=settings.batch_size, num_workers=settings.num_workers,
                                    seed=settings.seed, max_videos=settings.max_videos)
        clips = ClipSettings(image_size=settings.image_size, test_clips=settings.test_clips)
        reports = []
        for split in settings.split:  # each split fine-tunes its own copy of the encoder
            model = copy.deepcopy(encoder) if len(settings.split) > 1 else encoder
            reports.append(run_ucf101(model, settings.root, settings.splits, split, settings.pooling, out_dir,
                                      finetune, clips))
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
        return Result(self.name, metrics, {"milestones": FINETUNE.milestones, "clip": asdict(clips)},
                      Coverage(used, expected, note, training_skipped=sum(len(r["skipped_videos"]["train"])
                                                                          for r in reports)),
                      tables=tables, skipped=skipped,
                      artifacts={f"classifier_split{r['split']}": f"classifier_split{r['split']}.pt" for r in reports})
