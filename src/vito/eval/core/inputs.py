"""Evaluation inputs: image folders and the ImageNet evaluation view.

One rule for every evaluation: an image that cannot be read (``vito.data.images``: corrupt, truncated, not an
image, or a decompression bomb) is *skipped*, listed with its reason, and counted in the Result's coverage; it
never stops a run. Any mode is read as RGB, 16-bit greys scaled to 8 bits. Tiny images (1x1) are evaluated:
the crop side is clamped to at least one pixel. Folders are walked following symbolic links, but a directory
already visited (a symlink loop, or a second link to the same folder) is not read twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vito.data.imagenet import CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD
from vito.data.images import IMAGE_SUFFIXES, UnreadableImage, read_image, to_rgb_array
from vito.data.local_files import walk_once
from vito.errors import DataError

log = logging.getLogger(__name__)



def centre_crop_side(height: int, width: int) -> int:
    """Side of the evaluation crop: 224/256 of the short side, at least one pixel (a 1x1 image stays 1x1)."""
    return max(1, math.floor(CROP_FRACTION * min(height, width)))


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` → uint8 ``[..., 3, size, size]``: the centre crop, bicubic resize."""
    import torchvision.transforms.v2.functional as TF  # loads torchvision's model zoo: kept out of `vito eval --help`

    side = centre_crop_side(*image.shape[-2:])
    image = TF.center_crop(image, [side, side])
    return TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)


class EvalTransform:
    """ImageNet evaluation view (docs/metrics.md): centre crop of side ``floor(224/256 · min(H, W))``,
    bicubic resize to ``size``, scale to [0, 1], mean/std normalise."""

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image or a uint8 ``[..., 3, H, W]`` tensor (e.g. a clip) in, normalised ``[..., 3, size, size]`` out."""
        import torchvision.transforms.v2.functional as TF  # kept out of `vito eval --help` (as in centre_crop)

        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.ascontiguousarray(to_rgb_array(image))).permute(2, 0, 1)
        image = TF.to_dtype(centre_crop(image, self.size), torch.float32, scale=True).clamp(0, 1)
        return TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))

    def __repr__(self) -> str:
        return f"EvalTransform(centre crop {CROP_FRACTION:.4f}, bicubic {self.size})"


def walk_files(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, sorted; symlinked folders followed once, loops never."""
    return sorted(p for p in walk_once(root) if p.name.lower().endswith(tuple(suffixes)) and p.is_file())


def list_images(folder: Path) -> list[Path]:
    return walk_files(Path(folder))


class ImageFiles(Dataset):
    """``(image or None, label, path, reason)`` per file: unreadable files come back as ``None`` with the reason."""

    def __init__(self, paths: Sequence[Path | str], labels: Sequence[int] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [0] * len(self.paths)
        self.transform = transform or EvalTransform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str, str]:
        path = self.paths[index]
        try:
            return self.transform(read_image(path)), self.labels[index], path, ""
        except UnreadableImage as error:
            log.warning("skipping %s: %s", path, error)
            return None, self.labels[index], path, str(error)


class ImageFolder(ImageFiles):
    """``root/<class>/<image>`` (searched recursively inside each class); classes are the sorted folder names."""

    def __init__(self, root: str | Path, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise DataError(f"{root} is not an ImageFolder (root/<class>/<image>): no class folders")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            files = walk_files(root / name)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise DataError(f"{root} is not an ImageFolder (root/<class>/<image>): no image files "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        super().__init__(paths, labels, transform)

    @property
    def samples(self) -> list[tuple[str, int]]:
        return list(zip(self.paths, self.labels))


def collate_readable(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[str, str]]]:
    """Stack the readable items; return the others as ``(path, reason)`` pairs.

    Items are ``(tensor or None, label, path[, reason])``.
    """
    kept = [(item[0], item[1]) for item in batch if item[0] is not None]
    skipped = [(item[2], item[3] if len(item) > 3 else "unreadable") for item in batch if item[0] is None]
    if not kept:
        return None, torch.empty(0, dtype=torch.long), skipped
    return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept]), skipped
