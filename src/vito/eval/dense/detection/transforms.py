"""The detection views of paper A.3: fit into the target resolution at test, scale jitter + crop/pad at train.

"The target resolution is 800x1024. During testing, an image is resized by a factor s while preserving the
aspect ratio, such that it is tightly contained inside the target resolution, and then padded. When
fine-tuning, the image is rescaled by a factor of u*s where u is uniformly sampled in [0.8, 1.25], and is
then cropped or padded to the target resolution." The padding itself happens when images are batched
(``vito.eval.dense.detection.model.CanvasTransform``, bottom and right, after normalisation), so boxes never move by
it. A horizontal flip (p = 0.5) is added at train, as in every COCO recipe; A.3 does not mention it.

Images are uint8 ``[3, H, W]``; boxes are float ``[N, 4]`` (x1, y1, x2, y2) in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vito.eval.dense.detection.settings import TARGET_RESOLUTION

SCALE_JITTER = (0.8, 1.25)


@dataclass
class View:
    """A resized (and at train: cropped, maybe flipped) image with its boxes and how to map boxes back."""

    image: torch.Tensor  # uint8 [3, h, w], h <= canvas height and w <= canvas width
    boxes: torch.Tensor  # float [N, 4] in the view's pixels
    keep: torch.Tensor  # bool [N]: which input boxes are still visible (train crops drop some)
    scale: tuple[float, float]  # view pixels per original pixel along x and y (the rounded resize)


def fit_scale(height: int, width: int, canvas: tuple[int, int]) -> float:
    """The factor s that makes a ``height x width`` image fit tightly inside ``canvas``, keeping its aspect."""
    return min(canvas[0] / height, canvas[1] / width)


def _resize(image: torch.Tensor, boxes: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                              tuple[float, float]]:
    """Resize by ``scale`` to whole pixels; boxes follow with the per-axis factors of the rounded size."""
    import torchvision.transforms.v2.functional as TF  # loads torchvision's model zoo: kept out of `vito eval --help`

    height, width = image.shape[-2:]
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    factors = (size[1] / width, size[0] / height)
    resized = TF.resize(image, size, antialias=True)
    return resized, boxes * torch.tensor([factors[0], factors[1]] * 2, dtype=boxes.dtype), factors


def eval_view(image: torch.Tensor, boxes: torch.Tensor, canvas: tuple[int, int] = TARGET_RESOLUTION) -> View:
    """Resize by s to fit the canvas (padding follows at batching)."""
    resized, moved, factors = _resize(image, boxes, fit_scale(image.shape[-2], image.shape[-1], canvas))
    return View(resized, moved, torch.ones(len(boxes), dtype=torch.bool), factors)


def train_view(
    image: torch.Tensor,
    boxes: torch.Tensor,
    rng: np.random.Generator,
    canvas: tuple[int, int] = TARGET_RESOLUTION,
    jitter: tuple[float, float] = SCALE_JITTER,
    flip: bool = True,
) -> View:
    """Resize by u*s (u ~ U[jitter]), take a random canvas-sized crop where the image is larger, maybe flip.

    Boxes are clipped to the crop; those left without area are dropped (``keep`` says which survive).
    """
    scale = fit_scale(image.shape[-2], image.shape[-1], canvas) * float(rng.uniform(*jitter))
    resized, moved, factors = _resize(image, boxes, scale)
    height, width = resized.shape[-2:]
    top = int(rng.integers(0, height - canvas[0] + 1)) if height > canvas[0] else 0
    left = int(rng.integers(0, width - canvas[1] + 1)) if width > canvas[1] else 0
    crop_h, crop_w = min(height, canvas[0]), min(width, canvas[1])
    cropped = resized[:, top: top + crop_h, left: left + crop_w]
    moved = moved - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    moved[:, 0::2] = moved[:, 0::2].clamp(0, crop_w)
    moved[:, 1::2] = moved[:, 1::2].clamp(0, crop_h)
    keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    if flip and rng.random() < 0.5:
        cropped = cropped.flip(-1)
        moved = torch.stack([crop_w - moved[:, 2], moved[:, 1], crop_w - moved[:, 0], moved[:, 3]], dim=1)
    return View(cropped.contiguous(), moved[keep], keep, factors)


def boxes_to_original(boxes: torch.Tensor, scale: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """Eval-view boxes (x1, y1, x2, y2) back in the original image's pixels, clipped to it."""
    original = boxes / torch.tensor([scale[0], scale[1]] * 2, dtype=boxes.dtype, device=boxes.device)
    original[:, 0::2] = original[:, 0::2].clamp(0, width)
    original[:, 1::2] = original[:, 1::2].clamp(0, height)
    return original
