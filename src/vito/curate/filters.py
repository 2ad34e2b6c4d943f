"""The two content filters of VideoNet (paper §3.2): a minimum duration and an ImageNet classifier check.

"We classified the first 100 frames of each video and discarded videos for which the query category was
not equal to the ResNet's top-1 prediction for any of the frames. We also discarded videos of less than
10s in length." The classifier is any ImageNet-1k model (``vito.models.external``: timm or torchvision
architecture + local weights file); frames are decoded at the classifier's resize size in the decoder
itself (``vito.data.video.iter_frames``), centre-cropped and normalised with the model's own statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vito.data.video import iter_frames

# Durations come from the container; the comparison is exact up to float rounding of timestamps only
# (02_cups.mp4 at 10.01 s and mmaction2's 10.00 s clips pass; 9.74 s does not).
DURATION_TOLERANCE_SECONDS = 1e-6


def long_enough(duration: float, min_duration: float) -> bool:
    """The duration filter: at least ``min_duration`` seconds."""
    return duration >= min_duration - DURATION_TOLERANCE_SECONDS


@dataclass(frozen=True)
class Preprocess:
    """How a classifier wants its input: resize the short side, centre-crop, normalise."""

    crop: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def resize(self) -> int:
        return int(round(self.crop / self.crop_pct))

    @classmethod
    def for_model(cls, model: nn.Module, crop: int | None = None) -> Preprocess:
        """The model's own settings (timm's ``pretrained_cfg``), else torchvision's ImageNet defaults."""
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = crop or int(cfg.get("input_size", (3, 224, 224))[-1])
        return cls(
            crop=size,
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
        )

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] (short side already ``resize``) -> normalised float [N, 3, crop, crop]."""
        height, width = frames.shape[1:3]
        top, left = max(0, (height - self.crop) // 2), max(0, (width - self.crop) // 2)
        crop = frames[:, top : top + self.crop, left : left + self.crop]
        images = crop.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


@dataclass(frozen=True)
class FramePredictions:
    """Per-frame top-1 class and softmax probabilities of the first frames of one video."""

    top1: torch.Tensor  # int64 [N]
    probs: torch.Tensor  # float32 [N, num_classes]

    def __len__(self) -> int:
        return len(self.top1)


@dataclass(frozen=True)
class Verdict:
    """The classifier check for one query class: was it top-1 on some frame, and on which frame best."""

    class_index: int
    hit: bool
    best_frame: int  # among frames where it is top-1 if any, else among all frames
    best_score: float  # softmax probability of the class on that frame


def verify(predictions: FramePredictions, class_index: int) -> Verdict:
    """VideoNet's rule: keep if ``class_index`` is the top-1 prediction on at least one frame."""
    scores = predictions.probs[:, class_index]
    is_top1 = predictions.top1 == class_index
    hit = bool(is_top1.any())
    candidates = torch.where(is_top1, scores, torch.full_like(scores, -1.0)) if hit else scores
    best = int(candidates.argmax())
    return Verdict(class_index, hit, best, float(scores[best]))


class FrameClassifier:
    """Classifies the first frames of a video in batches with an ImageNet model."""

    def __init__(self, model: nn.Module, batch_size: int = 32, device: str | torch.device = "cpu",
                 preprocess: Preprocess | None = None):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size
        self.preprocess = preprocess or Preprocess.for_model(model)

    @torch.inference_mode()
    def classify_frames(self, frames: Iterable[torch.Tensor]) -> FramePredictions:
        """Top-1 and probabilities for each uint8 [H, W, 3] frame (short side = ``preprocess.resize``)."""
        top1, probs = [], []
        for batch in _batches(frames, self.batch_size):
            images = self.preprocess(batch.to(self.device, non_blocking=True))
            p = self.model(images).float().softmax(dim=1)
            top1.append(p.argmax(dim=1).cpu())
            probs.append(p.cpu())
        if not top1:
            return FramePredictions(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 0))
        return FramePredictions(torch.cat(top1), torch.cat(probs))

    def classify_video(self, path: str | Path, max_frames: int = 100) -> FramePredictions:
        """The paper's check input: the first ``max_frames`` frames. Raises ``DataError`` if unreadable."""
        return self.classify_frames(iter_frames(path, max_frames, short_side=self.preprocess.resize))


def _batches(frames: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
