"""Reading and writing DAVIS files: the sequence layout, annotation and result PNGs, and the frames.

A DAVIS folder holds ``JPEGImages/<resolution>/<sequence>/*.jpg`` and ``Annotations/<resolution>/<sequence>/*.png``.
Both DAVIS-2017 (palette PNGs, 255 = void) and DAVIS-2016 (grey PNGs, 0/255 for one object) are read. Results
are written, and read back for scoring, in the official layout (``RESULTS/<sequence>/<frame>.png``, palette PNGs
whose indices are object ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vito.data.imagenet import normalize
from vito.data.images import read_image, read_index_png_and_mode
from vito.errors import DataError
from vito.io import atomic_write, inside_name

VOID = 255


@dataclass
class DavisSequence:
    name: str
    frames: list[Path]  # JPEGImages/<res>/<name>/*.jpg
    annotations: list[Path]  # Annotations/<res>/<name>/*.png


def find_sequences(
    root: str | Path, resolution: str = "480p", names: Sequence[str] | None = None
) -> list[DavisSequence]:
    """The sequences under ``root`` (all of them, or ``names``); a named sequence that is missing is an error."""
    root = Path(root)
    image_dir, annotation_dir = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not image_dir.is_dir() or not annotation_dir.is_dir():
        raise DataError(f"{root} is not a DAVIS folder: expected JPEGImages/{resolution} and Annotations/{resolution}")
    names = [inside_name(name, "--sequences") for name in names] if names else \
        sorted(p.name for p in annotation_dir.iterdir() if p.is_dir())
    sequences = []
    for name in names:
        frames = sorted((image_dir / name).glob("*.jpg"))
        annotations = sorted((annotation_dir / name).glob("*.png"))
        if not frames or not annotations:
            raise DataError(f"sequence {name!r} has no frames or no annotations under {root}")
        sequences.append(DavisSequence(name, frames, annotations))
    if not sequences:
        raise DataError(f"no sequences found under {annotation_dir}")
    return sequences


ID_PNG_MODES = ("P", "L", "1", "I;16", "I")  # single-channel PNGs: palette, grey, 1-bit, 16-bit grey


def read_png_ids(path: Path) -> tuple[np.ndarray, str]:
    """The ``[H, W]`` values (0..255) and the PIL mode of a single-channel PNG; anything else is a ``DataError``."""
    ids, mode = read_index_png_and_mode(path, "annotation", modes=ID_PNG_MODES)
    return ids.astype(np.uint8), mode


def read_object_ids(path: str | Path, layout: str = "auto") -> np.ndarray:
    """An annotation as ``uint8 [H, W]`` object ids (0 = background).

    DAVIS-2017 PNGs hold the ids directly and 255 is void, which the official semi-supervised evaluation
    treats as background. DAVIS-2016 grey PNGs hold one object as 255. ``auto`` takes a grey PNG whose
    values are only 0 and 255 as DAVIS-2016 and every other PNG (palette, or grey ids 0, 1, 2...) as DAVIS-2017.
    """
    ids, mode = read_png_ids(Path(path))
    binary_2016 = mode in ("L", "1") and not np.isin(ids, (0, VOID), invert=True).any()
    if layout == "2016" or (layout == "auto" and binary_2016):
        return (ids > 127).astype(np.uint8) if ids.max() > 1 else ids
    ids[ids == VOID] = 0
    return ids


def davis_palette() -> list[int]:
    """The DAVIS/PASCAL-VOC colour map (index i's RGB from the bits of i), flattened for ``putpalette``."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(davis_palette())
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")


def read_result_png(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A result PNG's object ids, which must be an index map of the annotation's size."""
    if not path.is_file():
        raise DataError(f"missing result {path} (every scored frame needs a prediction)")
    ids, _ = read_png_ids(path)
    if ids.shape != shape:
        raise DataError(f"{path} is {ids.shape[1]}x{ids.shape[0]}, its annotation {shape[1]}x{shape[0]}")
    return ids


def read_frame(path: Path, short_side: int | None) -> torch.Tensor:
    """A normalised ``[3, H, W]`` frame; resized (bilinear, as mmcv/VFS) when its short side is not ``short_side``."""
    image = read_image(path, "frame").float() / 255
    height, width = image.shape[1:]
    if short_side and min(height, width) != short_side:
        scale = short_side / min(height, width)
        size = (int(height * scale + 0.5), int(width * scale + 0.5))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return normalize(image)
