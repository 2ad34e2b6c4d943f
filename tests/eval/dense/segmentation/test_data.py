"""Segmentation images are read by the one image reader: 16-bit greys scaled (they were saturated to white before
the readers were merged), every unreadable image a listed skip replaced by the next readable one. VOC split lists
and the ADE20K class list are read strictly (not UTF-8, a repeated id: a DataError)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import UNREADABLE, unreadable
from tests.eval.dense.segmentation.layouts import VOC_IDS, build_voc, score_voc, tiny_voc
from vito.errors import DataError
from vito.eval.dense.segmentation.augment import SegmentationBatches, TrainAugment
from vito.eval.dense.segmentation.data import open_dataset


def _voc(root: Path, pictures: dict[str, Image.Image | str]) -> Path:
    """A VOC 2012 folder whose val split holds ``pictures`` (4x3 images, or a kind of ``unreadable`` file) with
    all-background masks."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name, picture in pictures.items():
        if isinstance(picture, str):
            unreadable(picture, root / "JPEGImages" / f"{name}.jpg")
        else:
            picture.save(root / "JPEGImages" / f"{name}.jpg", format="PNG")
        Image.new("L", (4, 3), 0).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{name}\n" for name in pictures))
    return root


def _batch(root: Path) -> dict:
    return SegmentationBatches(open_dataset("voc", root, "val"), TrainAugment(crop=4), 0, 2).batch(0)


def test_a_sixteen_bit_image_trains_as_its_eight_bit_grey_not_as_white(tmp_path):
    sixteen = _batch(_voc(tmp_path / "16", {"a": Image.fromarray(np.full((3, 4), 32768, dtype=np.uint16))}))
    eight = _batch(_voc(tmp_path / "8", {"a": Image.new("L", (4, 3), 128)}))
    white = _batch(_voc(tmp_path / "255", {"a": Image.new("L", (4, 3), 255)}))  # what saturation made of it
    assert torch.equal(sixteen["images"], eight["images"]) and not torch.equal(sixteen["images"], white["images"])


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_every_unreadable_image_is_a_listed_skip(tmp_path, kind):
    batch = _batch(_voc(tmp_path / "voc", {"bad": kind, "good": Image.new("RGB", (4, 3), (9, 99, 199))}))
    assert len(batch["images"]) == 2
    ((name, reason),) = set(batch["skipped"])
    assert name == "bad" and "cannot read image" in reason and UNREADABLE[kind] in reason


def test_voc_split_list_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    root = tiny_voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_bytes(b"a\n\xff\xfeb\n")
    with pytest.raises(DataError, match=r"val.txt is not a readable UTF-8 text file"):
        score_voc(root, tmp_path / "out")


def test_voc_split_list_with_a_repeated_id_is_a_data_error(tmp_path: Path) -> None:
    root = tiny_voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\na\n")  # "a" would be scored and counted twice
    with pytest.raises(DataError, match=r"val.txt: 1 ids occur more than once \(e.g. \['a'\]\)"):
        score_voc(root, tmp_path / "out")


@pytest.mark.parametrize("line", ["../../../../tmp/x", "/tmp/x", "sub/a", "..", "a\\..\\b"])
def test_voc_ids_that_leave_the_dataset_folder_are_refused_before_anything_is_written(tmp_path: Path, line) -> None:
    root = tiny_voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text(f"a\n{line}\n")
    with pytest.raises(DataError, match=r"val.txt line 2: .* is not a plain name"):
        score_voc(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ade20k_class_list_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    (base / "images" / "validation").mkdir(parents=True)
    (base / "annotations" / "validation").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(base / "images" / "validation" / "x.jpg")
    (base / "objectInfo150.csv").write_bytes(b"Idx,Ratio,Train,Val,Name\n1,0.1,1,1,caf\xe9\n")
    with pytest.raises(DataError, match="objectInfo150.csv is not a readable UTF-8 text file"):
        open_dataset("ade20k", tmp_path, "val")


def test_training_batches_do_not_depend_on_the_thread_count(shared_data: Path, tmp_path: Path) -> None:
    """With no DataLoader workers the crops are made in the main process, with all its threads; in a worker, with
    one. The resize must round alike, so that a resume with another --num-workers continues the same batches."""
    root = build_voc(shared_data, tmp_path, splits={"trainaug": VOC_IDS})
    stream = SegmentationBatches(open_dataset("voc", root, "trainaug"), TrainAugment(crop=129), 0, 2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = list(itertools.islice(iter(stream), 3))  # as in a DataLoader worker
        torch.set_num_threads(4)
        four = list(itertools.islice(iter(stream), 3))  # as in the main process (--num-workers 0)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
               for a, b in zip(one, four))
    assert torch.get_num_threads() == threads
