"""UCF-101 action recognition with an image encoder applied frame by frame (paper §4, spec §8 and §10).

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

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vito.errors import DataError, VitoError
from vito.eval.encoders import Encoder, inference_mode, uses_bf16
from vito.eval.features import CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD, EvalTransform, collate_readable
from vito.io import atomic_write, write_json

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
    names = {}
    for line in path.read_text().splitlines():
        if line.strip():
            index, name = line.split()
            names[int(index) - 1] = name
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
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        folder = parts[0].split("/")[0].lower()
        if folder not in by_folder:
            raise DataError(f"{path}: class folder {folder!r} is not in classInd.txt")
        label = int(parts[1]) - 1 if len(parts) > 1 else by_folder[folder]
        if label != by_folder[folder]:
            raise DataError(f"{path}: {parts[0]} is labelled {label + 1}, its folder is class {by_folder[folder] + 1}")
        entries.append(VideoEntry(parts[0], label))
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


def transform_clip(
    frames: torch.Tensor, size: int, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` → normalised ``[T, 3, size, size]``, the same crop (and flip) for every frame.

    Test: the ImageNet evaluation view (``EvalTransform``: centre 224/256 crop, bicubic). Train: a random
    resized crop (area 8-100 %, aspect 3/4-4/3) and a horizontal flip with probability 1/2.
    """
    clip = frames.permute(0, 3, 1, 2)
    if not train:
        return EvalTransform(size)(clip)
    top, left, h, w = _random_crop_box(*clip.shape[-2:], generator)
    clip = TF.resized_crop(clip, top, left, h, w, [size, size], antialias=True)
    if torch.rand(1, generator=generator).item() < 0.5:
        clip = clip.flip(-1)
    return TF.normalize(clip.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))


def _random_crop_box(height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    area = height * width
    for _ in range(10):
        target = area * (0.08 + 0.92 * torch.rand(1, generator=generator).item())
        aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(1, generator=generator).item())
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


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
        from vito.data.video import probe_video, read_frames

        entry = self.entries[index]
        path = self.root / entry.path
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**31)
        short_side = int(round(self.settings.image_size / CROP_FRACTION))
        try:
            duration = probe_video(path).duration
            if self.train:
                starts = [max(duration - self.settings.seconds, 0.0) * torch.rand(1, generator=generator).item()]
            else:
                starts = evaluation_clip_starts(duration, self.settings.test_clips, self.settings.seconds)
            times = np.concatenate([clip_frame_times(s, self.settings) for s in starts])
            frames = read_frames(path, times, short_side=short_side)
        except DataError as error:
            log.warning("skipping %s: %s", path, error)
            return None, entry.label, str(path)
        clips = frames.view(len(starts), self.settings.num_frames, *frames.shape[1:])
        return torch.stack([transform_clip(c, self.settings.image_size, self.train, generator) for c in clips]), \
            entry.label, str(path)


# --------------------------------------------------------------------------------------------------
# Temporal integration


class TemporalAttention(nn.Module):
    """Weights over time from each frame's own feature.

    ``form="paper"``: ``w_t = tanh(W z_t)`` (W in R^{C×1}), ``v = Σ_t w_t z_t`` (VITO appendix).
    ``form="softmax"``: ``e_t = u^T tanh(W z_t)``, ``α = softmax_t(e)``, ``v = Σ_t α_t z_t`` (spec §8, 8a).
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
        loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, num_workers=settings.num_workers,
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
            raise DataError(f"no training video could be read under {dataset.root} ({len(skipped)} unreadable)")
        schedule.step()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "lr": optimizer.param_groups[0]["lr"]})
    model.eval()
    return {"history": history, "skipped_videos": sorted(skipped)}


@torch.no_grad()
def evaluate_video_classifier(model: VideoClassifier, dataset: UCF101Clips, settings: FinetuneSettings,
                          device: torch.device) -> dict[str, Any]:
    """Top-1/top-5 of the mean softmax over each video's test clips."""
    model.eval()
    loader = DataLoader(dataset, batch_size=max(1, settings.batch_size // 4), shuffle=False,
                        num_workers=settings.num_workers, collate_fn=collate_readable)
    probabilities, targets, skipped = [], [], []
    with inference_mode(device):
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


def run_ucf101(
    encoder: Encoder, root: str | Path, splits_dir: str | Path, split: int, pooling: str, out_dir: str | Path,
    settings: FinetuneSettings | None = None, clips: ClipSettings | None = None, device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Fine-tune (or train a head on a frozen encoder) on a split's training list, test on its test list.

    Writes ``OUT/ucf101.json`` (accuracies, settings, loss history), ``OUT/ucf101.md`` and ``OUT/classifier.pt``.
    """
    settings, clips, device = settings or FinetuneSettings(), clips or ClipSettings(), torch.device(device)
    if settings.mode not in ("finetune", "frozen"):
        raise VitoError(f"UCF-101 mode {settings.mode!r} is not 'finetune' or 'frozen'")
    if not Path(root).is_dir():
        raise DataError(f"UCF-101 video folder not found: {root}")
    names = read_class_names(splits_dir)
    train_entries = read_split(splits_dir, split, "train")[: settings.max_videos]
    test_entries = read_split(splits_dir, split, "test")[: settings.max_videos]
    torch.manual_seed(settings.seed)
    model = VideoClassifier(encoder, pooling, len(names)).to(device)
    started = time.perf_counter()
    training = train_video_classifier(model, UCF101Clips(root, train_entries, True, clips, settings.seed),
                                      settings, device)
    testing = evaluate_video_classifier(model, UCF101Clips(root, test_entries, False, clips), settings, device)
    report = {
        "encoder": encoder.name, "split": split, "pooling": pooling, "top1": testing["top1"], "top5": testing["top5"],
        "train_videos": len(train_entries), "test_videos": testing["videos"],
        "skipped_videos": {"train": training["skipped_videos"], "test": testing["skipped_videos"]},
        "settings": asdict(settings), "clips": asdict(clips), "history": training["history"],
        "seconds": time.perf_counter() - started,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "ucf101.json", report)
    with atomic_write(out_dir / "classifier.pt", "wb") as handle:
        torch.save({"pool": model.pool.state_dict(), "fc": model.fc.state_dict(), "classes": names}, handle)
    with atomic_write(out_dir / "ucf101.md") as handle:
        handle.write(f"# UCF-101 split {split} — {encoder.name}\n\n{pooling} pooling, {settings.mode}: "
                     f"top-1 {100 * report['top1']:.2f} %, top-5 {100 * report['top5']:.2f} % on "
                     f"{report['test_videos']} test videos ({len(testing['skipped_videos'])} unreadable skipped)\n")
    return report
