"""Frozen features of an image dataset, extracted once and cached.

Why cache: the linear-probe learning-rate sweep and the kNN classifier both read the same frozen
features; recomputing a ResNet-50 forward pass per sweep point would dominate the run time. The cache
key covers the encoder's weights, the dataset's files, the transform and the precision (bf16 on GPUs), so a
stale cache is never read.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from vito.errors import DataError
from vito.eval.encoders import Encoder, inference_mode, uses_bf16
from vito.io import atomic_write

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 224 / 256  # the standard ImageNet evaluation crop


class EvalTransform:
    """ImageNet evaluation view (spec §9.1): centre crop of side ``floor(224/256 · min(H, W))``,
    bicubic resize to ``size``, scale to [0, 1], mean/std normalise."""

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image or a uint8 ``[..., 3, H, W]`` tensor (e.g. a clip) in, normalised ``[..., 3, size, size]`` out."""
        if isinstance(image, Image.Image):
            image = TF.pil_to_tensor(image.convert("RGB"))
        height, width = image.shape[-2:]
        side = math.floor(CROP_FRACTION * min(height, width))
        image = TF.center_crop(image, [side, side])
        image = TF.resize(image, [self.size, self.size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        image = TF.to_dtype(image, torch.float32, scale=True).clamp(0, 1)
        return TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))

    def __repr__(self) -> str:
        return f"EvalTransform(centre crop {CROP_FRACTION:.4f}, bicubic {self.size})"


class ReadableImageFolder(ImageFolder):
    """An ImageFolder whose items are ``(image or None, label, path)``: an unreadable (corrupt, truncated)
    file comes back as ``None`` so that one bad file among millions is skipped and counted, not fatal.
    Any image mode (grey, RGBA, palette, CMYK) is converted to RGB."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB")), label, path
        except OSError as error:  # PIL's UnidentifiedImageError and truncated-file errors are OSErrors
            log.warning("skipping unreadable image %s: %s", path, error)
            return None, label, path


def collate_readable(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """Collate ``(tensor or None, label, path)`` items: stack the readable ones, return the others' paths."""
    kept = [(x, y) for x, y, _ in batch if x is not None]
    skipped = [path for x, _, path in batch if x is None]
    if not kept:
        return None, torch.empty(0, dtype=torch.long), skipped
    return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept]), skipped


def image_folder(root: str | Path, transform: EvalTransform) -> ReadableImageFolder:
    """An ImageFolder (``root/<class>/<image>``) with a clear error when the layout is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    try:
        return ReadableImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"{root} is not an ImageFolder (root/<class>/<image>): {error}") from error


@dataclass
class FeatureSet:
    """Frozen features with their labels; ``classes[i]`` names label ``i``; ``skipped``: unreadable files."""

    features: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N] int64
    classes: list[str]
    paths: list[str]
    skipped: list[str] = field(default_factory=list)


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    dataset: ReadableImageFolder,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
) -> FeatureSet:
    """Features of every readable image of ``dataset``, in dataset order; unreadable ones are listed as skipped."""
    device = next(encoder.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_readable)
    features, labels, skipped = [], [], []
    with inference_mode(device):
        for images, targets, bad in tqdm(loader, desc=desc, unit="batch"):
            skipped += bad
            if images is not None:
                features.append(encoder.embed(images.to(device, non_blocking=True)).float().cpu())
                labels.append(targets)
    if not features:
        raise DataError(f"no readable images to extract features from ({desc}; {len(skipped)} unreadable)")
    unreadable = set(skipped)
    paths = [path for path, _ in dataset.samples if path not in unreadable]
    return FeatureSet(torch.cat(features), torch.cat(labels).long(), list(dataset.classes), paths, skipped)


def dataset_fingerprint(dataset: ImageFolder) -> str:
    """Hash of the file list with sizes and modification times: changes whenever the data does."""
    digest = hashlib.sha256()
    for path, label in dataset.samples:
        stat = Path(path).stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cached_features(
    encoder: Encoder,
    root: str | Path,
    cache_dir: str | Path | None,
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 0,
) -> FeatureSet:
    """Features of an ImageFolder, read from ``cache_dir`` when the same encoder/data/transform was seen."""
    dataset = image_folder(root, EvalTransform(image_size))
    precision = "bf16" if uses_bf16(next(encoder.parameters()).device) else "fp32"
    key = hashlib.sha256(
        f"{encoder.fingerprint}|{dataset_fingerprint(dataset)}|{dataset.transform!r}|{precision}".encode()
    ).hexdigest()[:20]
    cache = Path(cache_dir) / f"features-{Path(root).name}-{key}.pt" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        log.info("reading cached features %s", cache)
        return FeatureSet(**torch.load(cache, map_location="cpu", weights_only=True))
    result = extract_features(encoder, dataset, batch_size, num_workers, desc=f"features {Path(root).name}")
    if cache is not None:
        with atomic_write(cache, "wb") as handle:
            torch.save(vars(result), handle)
    return result
