"""A toy DAVIS-2017 folder that several DAVIS test modules propagate on and score."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vito.eval.video.davis_data import save_palette_png


def tiny_davis(root, frames: int = 4) -> None:
    """A 2017-layout sequence: two objects (palette ids 1, 2) and a void border, 64x96."""
    for t in range(frames):
        image = np.full((64, 96, 3), 40, np.uint8)
        ids = np.zeros((64, 96), np.uint8)
        ids[10 + t : 30 + t, 10:30] = 1
        ids[30:50, 50 + t : 80 + t] = 2
        image[ids == 1] = (230, 30, 30)
        image[ids == 2] = (30, 30, 230)
        ids[0, :] = 255
        (root / "JPEGImages" / "480p" / "toy").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / "480p" / "toy" / f"{t:05d}.jpg", quality=95)
        save_palette_png(root / "Annotations" / "480p" / "toy" / f"{t:05d}.png", ids)
