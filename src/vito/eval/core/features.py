"""Frozen features of an image dataset, extracted once and cached.

Why cache: the linear-probe learning-rate sweep and the kNN classifier both read the same frozen
features; recomputing a ResNet-50 forward pass per sweep point would dominate the run time. The cache
key covers the encoder's weights, the dataset's files, the transform and the precision (bf16 on GPUs), so a
stale cache is never read.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vito.engine.distributed import worker_count
from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import inference_mode, resolve_precision
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import EvalTransform, ImageFolder, collate_readable
from vito.io import atomic_write
from vito.tensor_files import load_tensor_file

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Frozen features with their labels; ``classes[i]`` names label ``i``; ``skipped``: (file, reason) pairs."""

    features: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N] int64
    classes: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return len(self.paths) + len(self.skipped)


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    dataset: ImageFolder,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
) -> FeatureSet:
    """Features of every readable image of ``dataset``, in dataset order; unreadable ones are listed as skipped."""
    device = next(encoder.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=worker_count(num_workers),
                        collate_fn=collate_readable)
    features, labels, skipped = [], [], []
    with inference_mode(device, encoder.precision):
        for images, targets, bad in progress(loader, desc=desc, unit="batch"):
            skipped += bad
            if images is not None:
                features.append(encoder.embed(images.to(device, non_blocking=True)).float().cpu())
                labels.append(targets)
    if not features:
        raise DataError(f"no readable images to extract features from ({desc}; {len(skipped)} unreadable)")
    unreadable = {path for path, _ in skipped}
    paths = [path for path in dataset.paths if path not in unreadable]
    return FeatureSet(torch.cat(features), torch.cat(labels).long(), list(dataset.classes), paths, skipped)


def dataset_fingerprint(dataset: ImageFolder) -> str:
    """Hash of the file list with sizes and modification times: changes whenever the data does."""
    digest = hashlib.sha256()
    for path, label in zip(dataset.paths, dataset.labels):
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
    dataset = ImageFolder(root, EvalTransform(image_size))
    precision = resolve_precision(encoder.precision, next(encoder.parameters()).device)
    key = hashlib.sha256(
        f"{encoder.fingerprint}|{dataset_fingerprint(dataset)}|{dataset.transform!r}|{precision}".encode()
    ).hexdigest()[:20]
    cache = Path(cache_dir) / f"features-{Path(root).name}-{key}.pt" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            cached = FeatureSet(**load_tensor_file(cache, "feature cache"))
            cached.skipped = [tuple(item) for item in cached.skipped]
            log.info("read cached features %s", cache)
            return cached
        except (VitoError, TypeError) as error:  # a truncated or foreign file
            log.warning("feature cache %s is unreadable (%s); recomputing it", cache, error)
    result = extract_features(encoder, dataset, batch_size, num_workers, desc=f"features {Path(root).name}")
    if cache is not None:
        with atomic_write(cache, "wb") as handle:
            torch.save(vars(result), handle)
    return result
