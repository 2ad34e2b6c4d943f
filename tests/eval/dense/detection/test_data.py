"""Detection images are read by the one image reader: 16-bit greys scaled, every unreadable file a listed skip.
Annotation files are checked field by field (a wrong type is a DataError naming the record); an empty box, an
image without boxes and a byte order mark are fine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import UNREADABLE, unreadable
from tests.eval.dense.detection.helpers import tiny_instances
from vito.errors import DataError
from vito.eval.dense.detection.data import DetectionImages, image_file, load_annotations

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


@pytest.mark.parametrize(("where", "key", "value", "message"), [
    ("annotations", "bbox", ["1", "1", "4", "4"], r"annotation #0 \(id 1\) has bbox .*four finite numbers"),
    ("annotations", "bbox", [1, 1], r"has bbox \[1, 1\]: four finite numbers"),
    ("annotations", "bbox", [1, 1, -4, 4], "negative width or height"),
    ("annotations", "area", "big", "has area 'big'"),
    ("annotations", "iscrowd", "no", "has iscrowd 'no': 0 or 1"),
    ("annotations", "image_id", [1], r"has image_id \[1\]: an integer"),
    ("images", "id", "1", "image #0 has id '1': an integer"),
    ("images", "width", "10", "image #0 .* positive integers"),
    ("images", "height", 0, "image #0 .* positive integers"),
    ("categories", "id", 1.0, "category #0 has id 1.0: an integer"),
])
def test_detect_annotations_with_wrong_types_are_a_data_error(tmp_path: Path, where: str, key: str, value: Any,
                                                              message: str) -> None:
    data = tiny_instances()
    data[where][0][key] = value
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        load_annotations(path, "coco")


def test_detect_annotations_with_an_empty_box_and_an_image_without_boxes_are_scored(tmp_path: Path) -> None:
    data = tiny_instances()
    data["annotations"].append({**data["annotations"][0], "id": 2, "bbox": [3, 3, 0, 0], "area": 0})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    assert sorted(load_annotations(path, "coco").images) == [1, 2]


def test_detect_annotation_file_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(tiny_instances()).encode())
    assert load_annotations(path, "coco").image_ids == [1, 2]


def test_a_file_name_that_leaves_the_image_folder_is_read_inside_it(tmp_path: Path) -> None:
    """COCO's file_name is reduced to its last part: '../../secret.jpg' can only name images/secret.jpg."""
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    images = tmp_path / "images" / "val"
    images.mkdir(parents=True)
    assert image_file(images, {"id": 7, "file_name": "../../secret.jpg"}) is None
    (images / "secret.jpg").write_bytes(b"inside")
    assert image_file(images, {"id": 7, "file_name": "../../secret.jpg"}) == images / "secret.jpg"
    assert image_file(images, {"id": 7, "file_name": ".."}) is None
