"""Attention masks drawn over the frames they were computed from (the paper's Fig. B.1).

A mask is a low-resolution map of attention weights ([h, w], one per pooled stage). To show it, it is
upsampled bilinearly to the image size, normalised to [0, 1], coloured, and alpha-blended over the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vito.viz.figures import save_figure  # noqa: E402

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def upsample(mask: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an [h, w] mask to ``size`` = (H, W), rescaled to [0, 1]."""
    m = torch.as_tensor(_numpy(mask), dtype=torch.float32)[None, None]
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    low, high = m.min(), m.max()
    m = (m - low) / (high - low) if high > low else torch.zeros_like(m)
    return m.numpy()


def overlay(image: ArrayLike, mask: ArrayLike, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """uint8 [H, W, 3] image with its [h, w] attention mask blended on top, as uint8 [H, W, 3]."""
    image = _numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    heat = upsample(mask, image.shape[:2])
    colours = plt.get_cmap(cmap)(heat)[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_attention_grid(
    images: Sequence[ArrayLike],
    masks_per_stage: Sequence[Sequence[ArrayLike]],
    path: str | Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """PNG grid: one row per image; columns image | stage 1 | ... | stage S | mean over stages.

    ``masks_per_stage[s][i]`` is the [h_s, w_s] mask of stage ``s`` for image ``i``. Stages differ in
    resolution, so the mean is taken after upsampling each to the image size.
    """
    stages = len(masks_per_stage)
    columns = ["image"] + [f"stage {s + 1}" for s in range(stages)] + (["mean over stages"] if stages > 1 else [])
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2.0 * len(columns), 2.0 * len(images)),
                             squeeze=False)
    for i, image in enumerate(images):
        image = _numpy(image)
        heats = [upsample(masks_per_stage[s][i], image.shape[:2]) for s in range(stages)]
        panels = [image] + [overlay(image, h) for h in heats]
        if stages > 1:
            panels.append(overlay(image, np.mean(heats, axis=0)))
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(columns[j], fontsize=9)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
    return save_figure(fig, path, dpi=100)
