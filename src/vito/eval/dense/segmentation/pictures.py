"""Class-index masks as colour pictures: the PASCAL VOC colour map, and image | ground truth | prediction panels.

The VOC colour map (the devkit's ``labelcolormap``: class bits spread over the RGB high bits) is the one the
VOC palette PNGs use, so a prediction PNG written with it opens in any viewer like a VOC ground-truth mask.
It is defined for all 256 values and so also serves ADE20K's 150 classes. Ignored pixels (255) are drawn
(224, 224, 192), as VOC draws its boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vito.io import atomic_write

IGNORE_COLOUR = (224, 224, 192)
PANEL_GAP = 4


def voc_colour_map(size: int = 256) -> np.ndarray:
    """``[size, 3]`` uint8: the VOC devkit's colour of each class index."""
    colours = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        value, r, g, b = index, 0, 0, 0
        for shift in range(8):
            r |= ((value >> 0) & 1) << (7 - shift)
            g |= ((value >> 1) & 1) << (7 - shift)
            b |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours[index] = (r, g, b)
    colours[255] = IGNORE_COLOUR
    return colours


def save_index_png(mask: np.ndarray, path: Path) -> None:
    """A class-index mask (values 0..255) as a mode-P PNG with the VOC palette, written atomically."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_colour_map().reshape(-1).tolist())
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")


def colour(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` class indices (255 = ignore; other values outside 0..255 drawn as ignore) → RGB uint8."""
    mask = np.where((mask >= 0) & (mask <= 255), mask, 255).astype(np.uint8)
    return voc_colour_map()[mask]


def save_mask_panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, path: Path) -> None:
    """Image | ground truth | prediction side by side (all at the image's size), as a PNG."""
    height = image.shape[0]
    gap = np.full((height, PANEL_GAP, 3), 255, dtype=np.uint8)
    panel = np.concatenate([image.astype(np.uint8), gap, colour(label), gap, colour(prediction)], axis=1)
    with atomic_write(path, "wb") as handle:
        Image.fromarray(panel).save(handle, format="PNG")
