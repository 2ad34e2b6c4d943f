"""Predicted boxes next to the ground truth for one image: what a detection fine-tune gets right and wrong.

Left panel: the ground-truth boxes; right panel: the predictions with a score of at least ``min_score``,
each labelled with its class name (and score). Boxes are (x1, y1, x2, y2) in the image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from vito.viz.figures import save_figure  # noqa: E402

GROUND_TRUTH_COLOUR, PREDICTION_COLOUR = "#2ca02c", "#d62728"


def _draw(axis, image: np.ndarray, boxes: np.ndarray, names: Sequence[str], colour: str, title: str) -> None:
    axis.imshow(image)
    for (x1, y1, x2, y2), name in zip(boxes, names):
        axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        axis.text(x1, y1, name, fontsize=6, color="white", va="bottom",
                  bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "linewidth": 0})
    axis.set_title(title, fontsize=8)
    axis.set_axis_off()


def save_detection_picture(
    image: np.ndarray,
    truth_boxes: np.ndarray,
    truth_names: Sequence[str],
    boxes: np.ndarray,
    names: Sequence[str],
    scores: np.ndarray,
    path: str | Path,
    min_score: float = 0.3,
    title: str = "",
) -> Path:
    """PNG at ``path``: ground truth (left) and predictions scoring >= ``min_score`` (right), uint8 [H, W, 3] in."""
    keep = np.asarray(scores) >= min_score
    labels = [f"{n} {s:.2f}" for n, s, k in zip(names, scores, keep) if k]
    height, width = image.shape[:2]
    figure, axes = plt.subplots(1, 2, figsize=(8, 4 * height / max(width, 1) + 0.4))
    _draw(axes[0], image, np.asarray(truth_boxes).reshape(-1, 4), truth_names, GROUND_TRUTH_COLOUR,
          f"ground truth ({len(truth_names)})")
    _draw(axes[1], image, np.asarray(boxes).reshape(-1, 4)[keep], labels, PREDICTION_COLOUR,
          f"predictions, score >= {min_score} ({int(keep.sum())} of {len(keep)})")
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=120)
