"""Saliency for ClickMe (docs/metrics.md, paper §4.2 and A.8): human maps, model maps, and how alike they are.

People playing ClickMe reveal the parts of an image they find most useful for recognising it. A model is
aligned when its own saliency map ranks image regions the same way: the score is the Spearman rank correlation
between the two maps, averaged over images and divided by the human inter-rater ceiling.

VITO's saliency is its own attention (the pooling maps of both stages, upsampled and averaged); models without
attention pooling get gradient saliency (|d logit_true / d pixel|, max over colour channels), as in Fel et al.
The human maps are prepared exactly as the Harmonization code does (resize, blur, resize).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vito.data.imagenet import IMAGENET_STD
from vito.errors import VitoError

HUMAN_SPEARMAN_CEILING = 0.65753  # mean Spearman between human raters (Harmonization); scores may exceed 1
MAP_SIZE = 224
BLUR_SIZE, BLUR_SIGMA = 10, 10.0


# --------------------------------------------------------------------------------------------------
# Human maps


def gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The reference's ``[size, size]`` Gaussian (sums to 1), with its offsets for an even size.

    Rows run over offsets ``(size-1)//2 … -(size-1)//2 - 1`` and columns over ``-(size-1)//2 - 1 …``, as in
    ``harmonization/common/blur.py`` with Python's floor division.
    """
    half = (size - 1) // 2
    xs = torch.arange(-(size - 1) // 2, half + 1, dtype=torch.float64)
    ys = torch.arange(half, -(size - 1) // 2 - 1, -1, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    kernel = torch.exp(-(grid_x**2 + grid_y**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).float()


def blur_same(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """TensorFlow-style ``SAME`` cross-correlation of ``[B, H, W]`` maps (zero padding, extra pad after)."""
    size = kernel.shape[-1]
    before, after = (size - 1) // 2, size // 2
    padded = F.pad(maps[:, None], (before, after, before, after))
    return F.conv2d(padded, kernel[None, None].to(maps))[:, 0]


def resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[B, H, W]`` maps (half-pixel centres, no antialiasing: ``tf.image.resize``)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def preprocess_human_maps(heatmaps: torch.Tensor) -> torch.Tensor:
    """ClickMe click maps ``[B, H, W]`` (256×256 in the release) → blurred ``[B, 224, 224]`` float maps."""
    if heatmaps.dim() == 2:
        heatmaps = heatmaps[None]
    small = resize(heatmaps.float(), 64)
    return resize(blur_same(small, gaussian_kernel()), MAP_SIZE)


# --------------------------------------------------------------------------------------------------
# Scores


def spearman_per_image(model_maps: torch.Tensor | np.ndarray, human_maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each image's flattened maps (ties get average ranks); nan if a map is flat."""
    from scipy.stats import rankdata  # scipy.stats takes seconds to import: kept out of `vito eval --help`

    a = np.asarray(model_maps, dtype=np.float64).reshape(len(model_maps), -1)
    b = np.asarray(human_maps, dtype=np.float64).reshape(len(human_maps), -1)
    if a.shape != b.shape:
        raise ValueError(f"model maps {a.shape} and human maps {b.shape} differ in shape")
    ranks_a = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    ranks_b = rankdata(b, axis=1) - (b.shape[1] + 1) / 2
    denominator = np.sqrt((ranks_a**2).sum(1) * (ranks_b**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ranks_a * ranks_b).sum(1) / denominator, np.nan)


def top_fraction_overlap(
    model_maps: np.ndarray, human_maps: np.ndarray, percentile: float = 10
) -> dict[str, np.ndarray]:
    """Dice and IoU of the two maps' top ``percentile`` % regions (the reference's secondary scores)."""
    a = np.asarray(model_maps, dtype=np.float64).reshape(len(model_maps), -1)
    b = np.asarray(human_maps, dtype=np.float64).reshape(len(human_maps), -1)
    top_a = a > np.percentile(a, 100 - percentile, axis=1, keepdims=True)
    top_b = b > np.percentile(b, 100 - percentile, axis=1, keepdims=True)
    inter = (top_a & top_b).sum(1)
    return {
        "dice": 2.0 * inter / (top_a.sum(1) + top_b.sum(1) + 1e-9),
        "iou": inter / ((top_a | top_b).sum(1) + 1e-9),
    }


def alignment_score(spearman: np.ndarray) -> float:
    """Mean Spearman over images divided by the human ceiling (flat maps, whose rho is undefined, left out)."""
    values = np.asarray(spearman, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean() / HUMAN_SPEARMAN_CEILING) if values.size else math.nan


# --------------------------------------------------------------------------------------------------
# Model saliency


def gradient_saliency(
    classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """``max_c |d logit[label] / d pixel[c]|`` → ``[B, H, W]`` (one backward pass for the whole batch).

    ``images`` are mean/std normalised; the gradient is taken w.r.t. the un-normalised pixels, as in the
    reference (whose models normalise inside), i.e. divided by each channel's std before the max over channels.
    """
    images = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(images)
        chosen = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
        (gradient,) = torch.autograd.grad(chosen, images)
    scale = torch.tensor(std, dtype=gradient.dtype, device=gradient.device).view(1, -1, 1, 1)
    return (gradient.abs() / scale).amax(dim=1).detach()


@torch.no_grad()
def attention_saliency(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """VITO's saliency: each stage's attention map bilinearly upsampled to the image, then averaged."""
    maps = encoder.attention_maps(images)
    if not maps:
        raise VitoError("this encoder has no attention pooling: use gradient saliency with a classifier")
    size = images.shape[-2:]
    upsampled = [F.interpolate(m[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] for m in maps]
    return torch.stack(upsampled).mean(dim=0)


def has_attention(encoder: nn.Module, probe: torch.Tensor) -> bool:
    """Whether ``encoder`` pools with attention: its maps vary over positions (average pooling gives flat ones)."""
    attention = getattr(encoder, "attention_maps", None)
    maps = attention(probe[:1]) if attention is not None else None
    return bool(maps) and any(bool(m.amax() > m.amin()) for m in maps)
