"""Paper Fig. 3: images, ClickMe human maps and several models' saliency maps side by side."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vito.viz.figures import save_figure  # noqa: E402


def _normalise(saliency: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per map so that maps of different scales share one colour range."""
    low, high = float(saliency.min()), float(saliency.max())
    return (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)


def plot_saliency_overlays(
    pixels: np.ndarray, human: np.ndarray, models: Mapping[str, np.ndarray], out: str | Path, alpha: float = 0.6
) -> Path:
    """Rows = images; columns = image, human map, then each model's map overlaid on the image.

    ``pixels`` is ``[N, H, W, 3]`` uint8, ``human`` and every model map ``[N, H, W]``.
    """
    columns = ["image", "human (ClickMe)", *models]
    rows = len(pixels)
    figure, axes = plt.subplots(rows, len(columns), figsize=(2.0 * len(columns), 2.0 * rows), squeeze=False)
    for row in range(rows):
        maps = [None, human[row], *(m[row] for m in models.values())]
        for column, (title, saliency) in enumerate(zip(columns, maps)):
            axis = axes[row, column]
            axis.imshow(pixels[row])
            if saliency is not None:
                axis.imshow(_normalise(saliency), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(textwrap.fill(title, 22), fontsize=8)
    return save_figure(figure, out, dpi=120)
