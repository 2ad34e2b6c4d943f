"""A labelled image folder the probe tests share: real sample images, two classes."""

from __future__ import annotations

import shutil
from pathlib import Path


def image_folder(root: Path, shared_data: Path) -> Path:
    """``root/c0/`` and ``root/c1/`` holding two of the shared ImageNet sample images each (names kept, ``.JPEG``)."""
    sources = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))[:4]
    for i, source in enumerate(sources):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / f"c{i % 2}" / source.name)
    return root
