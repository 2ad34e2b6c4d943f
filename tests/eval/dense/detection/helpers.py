"""A COCO instances file small enough to write out by hand, for the tests that break one field of it."""

from __future__ import annotations

from typing import Any


def tiny_instances() -> dict[str, Any]:
    """Two 10x10 images, one category, one 4x4 box on image 1 (image 2 has none)."""
    return {
        "images": [{"id": 1, "width": 10, "height": 10}, {"id": 2, "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}],
    }
