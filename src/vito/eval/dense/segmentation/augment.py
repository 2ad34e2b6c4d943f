"""Training crops and test-time inputs for segmentation fine-tunes, and the deterministic batch stream.

Why deterministic: the batch of step ``s`` is a pure function of ``(seed, s)`` — which images (an epoch-wise
permutation of the split) and how each is augmented (a generator seeded with the sample's *global* slot) —
so a resumed fine-tune repeats the uninterrupted one, and K processes at the same global batch see exactly
the samples one process would (rank r takes global slots ``r*b .. r*b+b-1``).

Augmentation (per sample, uint8 in, normalised float out, in the DataLoader workers):

- VOC (BYOL / DeepLab): scale the image by ``r ~ U[0.5, 2.0]``; random ``crop``×``crop`` crop (padded
  where the image is smaller: image with the mean colour, label with 255); horizontal flip with p = 0.5.
- ADE20K (mmseg ``upernet_r50`` 512×512): ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0),
  keep_ratio=True)``; ``RandomCrop(512, cat_max_ratio=0.75)`` (up to 10 draws until no class covers 75 % of
  the crop's labelled pixels); flip; ``PhotoMetricDistortion`` (brightness ±32, contrast and saturation
  ×[0.5, 1.5], hue ±18 of 180, each with p = 0.5, contrast before or after the colour changes), then pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from vito.data.augment import normalize
from vito.data.images import UnreadableImage, read_rgb
from vito.data.stream import EpochShuffle, StepStream
from vito.errors import DataError
from vito.eval.dense.segmentation.data import IGNORE_INDEX, SegmentationDataset

CAT_MAX_TRIES = 10  # mmseg RandomCrop


@dataclass(frozen=True)
class TrainAugment:
    """One training sample's geometry and colour changes; see the module docstring for the two presets."""

    crop: int
    ratio_range: tuple[float, float] = (0.5, 2.0)
    fit_scale: tuple[int, int] | None = None  # (long, short) to fit before the ratio (ADE20K: (2048, 512))
    cat_max_ratio: float = 1.0
    photometric: bool = False
    flip: bool = True

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """uint8 ``[H, W, 3]`` and int64 ``[H, W]`` → normalised float ``[3, crop, crop]``, int64 ``[crop, crop]``."""
        ratio = rng.uniform(*self.ratio_range)
        height, width = label.shape
        if self.fit_scale is None:
            factor = ratio
        else:
            factor = fit_factor(height, width, (self.fit_scale[0] * ratio, self.fit_scale[1] * ratio))
        size = (max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5)))
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(torch.from_numpy(label)[None, None].float(), size=size, mode="nearest")[0, 0].long()
        top, left = self._crop_origin(lab, rng)
        img = img[:, top:top + self.crop, left:left + self.crop]
        lab = lab[top:top + self.crop, left:left + self.crop]
        if self.flip and rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        if self.photometric:
            img = photometric_distortion(img, rng)
        return pad_to(normalize(img.clamp(0, 1)), lab, self.crop, self.crop)

    def _crop_origin(self, label: torch.Tensor, rng: np.random.Generator) -> tuple[int, int]:
        height, width = label.shape
        for _ in range(CAT_MAX_TRIES if self.cat_max_ratio < 1.0 else 1):
            top = int(rng.integers(0, max(height - self.crop, 0) + 1))
            left = int(rng.integers(0, max(width - self.crop, 0) + 1))
            if self.cat_max_ratio >= 1.0:
                break
            crop = label[top:top + self.crop, left:left + self.crop]
            _, counts = torch.unique(crop[crop != IGNORE_INDEX], return_counts=True)
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                break
        return top, left


def fit_factor(height: int, width: int, scale: tuple[float, float]) -> float:
    """mmcv ``rescale_size`` with keep_ratio: the largest factor keeping long ≤ scale[0] and short ≤ scale[1]."""
    long_edge, short_edge = max(scale), min(scale)
    return min(long_edge / max(height, width), short_edge / min(height, width))


def photometric_distortion(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion`` on a float ``[3, H, W]`` image in [0, 1]."""
    image = image[None]
    if rng.random() < 0.5:
        image = (image + rng.uniform(-32, 32) / 255.0).clamp(0, 1)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        image = (image * contrast).clamp(0, 1)
    if rng.random() < 0.5:
        image = kornia.enhance.adjust_saturation(image, float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.5:
        image = kornia.enhance.adjust_hue(image, float(rng.uniform(-18, 18) / 180.0 * 2 * np.pi))
    if not contrast_first and contrast is not None:
        image = (image * contrast).clamp(0, 1)
    return image[0]


def pad_to(image: torch.Tensor, label: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad at the bottom/right: normalised image with 0 (the mean colour), label with 255."""
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return image, label


def network_input(image: np.ndarray, mode: str, size: int | tuple[int, int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Normalised ``[1, 3, h, w]`` network input of one test image and how to map logits back.

    ``centre-pad`` (VOC, 513×513 centre-crop inference: every VOC image is at most 500 px, so the crop is a
    centred padding): returns (top, left, H, W) to cut the original region out. ``resize-fit`` (ADE20K,
    mmseg ``Resize(scale=(2048, 512), keep_ratio=True)``): returns (H, W) to resize the logits back to.
    An image larger than the crop in ``centre-pad`` mode is predicted whole (fully convolutional).
    """
    img = normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))[None]
    height, width = image.shape[:2]
    if mode == "centre-pad":
        side = int(size) if not isinstance(size, tuple) else size[0]
        pad_h, pad_w = max(side - height, 0), max(side - width, 0)
        top, left = pad_h // 2, pad_w // 2
        img = F.pad(img, (left, pad_w - left, top, pad_h - top), value=0.0)
        return img, (top, left, height, width)
    if mode == "resize-fit":
        factor = fit_factor(height, width, tuple(float(s) for s in size))  # type: ignore[arg-type]
        new = (max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5)))
        return F.interpolate(img, size=new, mode="bilinear", align_corners=False), (height, width)
    raise ValueError(f"unknown test mode {mode!r}")


def logits_to_original(logits: torch.Tensor, mode: str, geometry: tuple[int, ...]) -> torch.Tensor:
    """``[1, C, h, w]`` logits of ``network_input`` → ``[C, H, W]`` at the image's original size."""
    if mode == "centre-pad":
        top, left, height, width = geometry
        return logits[0, :, top:top + height, left:left + width]
    return F.interpolate(logits.float(), size=geometry, mode="bilinear", align_corners=False)[0]


class SegmentationBatches(StepStream):
    """Endless batches for one rank from ``start_step``; use with ``DataLoader(batch_size=None)``.

    Workers split the steps as ``StepStream`` says.
    Batch: ``{"step", "images": float [b, 3, S, S], "labels": int64 [b, S, S], "skipped": [(id, reason)]}``;
    an unreadable image or mask is replaced by the next item of the permutation and reported once per worker.
    Data that stops the fine-tune (a mask with values outside the classes, no readable image at all) comes as
    ``{"step", "error": message}``, raised by the loss in the main process (``raise_batch_error``): raised in a
    DataLoader worker, it would reach the user wrapped in the worker's traceback, and the process would hang
    at exit on the worker, which ignores stop signals.
    """

    def __init__(self, dataset: SegmentationDataset, augment: TrainAugment, seed: int, global_batch: int,
                 rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not split over {world_size} processes")
        self.dataset, self.augment, self.seed = dataset, augment, seed
        self.global_batch, self.rank, self.world_size, self.start_step = global_batch, rank, world_size, start_step
        self.batch_size = global_batch // world_size
        self._bad: dict[int, str] = {}
        self._shuffle = EpochShuffle(seed, len(dataset.items))

    def item_for(self, position: int) -> int:
        """The item at a position of the endless, epoch-wise shuffled sequence."""
        return self._shuffle(position)[0]

    def batch(self, step: int) -> dict[str, Any]:
        images, labels, skipped = [], [], []
        for slot in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):
            rng = np.random.default_rng([self.seed, step, slot])
            try:
                image, label = self._first_usable(step * self.global_batch + slot, skipped)
            except DataError as error:
                return {"step": step, "error": str(error)}
            image, label = self.augment(image, label, rng)
            images.append(image)
            labels.append(label)
        return {"step": step, "images": torch.stack(images), "labels": torch.stack(labels), "skipped": skipped}

    def _first_usable(self, position: int, skipped: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        count = len(self.dataset.items)
        for offset in range(count):
            index = (self.item_for(position) + offset) % count
            if index in self._bad:
                continue
            item = self.dataset.items[index]
            try:
                image, label = read_rgb(item.image), self.dataset.read_mask(item)
            except UnreadableImage as error:
                self._bad[index] = str(error)
                skipped.append((item.id, str(error)))
                continue
            if image.shape[:2] != label.shape:
                self._bad[index] = (f"image {image.shape[1]}x{image.shape[0]} and mask "
                                    f"{label.shape[1]}x{label.shape[0]} differ in size")
                skipped.append((item.id, self._bad[index]))
                continue
            return image, label
        raise DataError(f"no image of {self.dataset.name} {self.dataset.split} is readable (first problem: "
                        f"{next(iter(self._bad.values()), 'none')})")


def raise_batch_error(batch: dict[str, Any]) -> None:
    """Raise, in the process that trains, the ``DataError`` that ``SegmentationBatches`` put in a batch."""
    if "error" in batch:
        raise DataError(batch["error"])
