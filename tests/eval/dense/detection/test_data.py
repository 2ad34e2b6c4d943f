"""Detection images are read by the one image reader: 16-bit greys scaled, every unreadable file a listed skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import UNREADABLE, unreadable
from vito.eval.dense.detection.data import DetectionImages, load_annotations

CANVAS = (96, 128)


@pytest.fixture(scope="module")
def annotations(shared_data: Path):
    return load_annotations(shared_data / "detection" / "coco" / "instances_train2017_overlap43.json", "coco")


def _images_of(annotations, folder: Path, picture: Image.Image) -> DetectionImages:
    """The annotations' first image only, as ``picture`` resized to the annotated size."""
    record = annotations.images[annotations.image_ids[0]]
    folder.mkdir()
    picture.resize((record["width"], record["height"])).save(folder / f"{record['id']:012d}.jpg", format="PNG")
    return DetectionImages(annotations, folder, train=False, canvas=CANVAS)


def test_a_sixteen_bit_image_is_read_as_its_eight_bit_grey(annotations, tmp_path):
    sixteen = _images_of(annotations, tmp_path / "16", Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)))
    eight = _images_of(annotations, tmp_path / "8", Image.new("L", (4, 4), 128))
    assert len(sixteen) == len(eight) == 1
    assert torch.equal(sixteen.item(0, 0)["image"], eight.item(0, 0)["image"])


@pytest.mark.parametrize("kind", sorted(set(UNREADABLE) - {"missing", "folder"}))  # no file: never an item
def test_every_unreadable_image_is_a_skip_listed_with_its_reason(annotations, tmp_path, kind):
    record = annotations.images[annotations.image_ids[0]]
    unreadable(kind, tmp_path / f"{record['id']:012d}.jpg")
    images = DetectionImages(annotations, tmp_path, train=False, canvas=CANVAS)
    item = images.item(0, 0)
    assert "image" not in item and item["skipped"][0] == str(tmp_path / f"{record['id']:012d}.jpg")
    assert "cannot read image" in item["skipped"][1] and UNREADABLE[kind] in item["skipped"][1]
