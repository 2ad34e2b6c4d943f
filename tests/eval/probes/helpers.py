"""A labelled image folder the probe tests share: real sample images, two classes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def image_folder(root: Path, shared_data: Path) -> Path:
    """``root/c0/`` and ``root/c1/`` holding two of the shared ImageNet sample images each (names kept, ``.JPEG``)."""
    sources = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))[:4]
    for i, source in enumerate(sources):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / f"c{i % 2}" / source.name)
    return root


def clusters(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=generator), labels
