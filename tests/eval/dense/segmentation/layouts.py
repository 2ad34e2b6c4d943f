"""The shared segmentation samples arranged as the datasets ship (symlinks in a temporary folder), and a tiny
synthetic VOC folder with its own predictions for the tests that break one file of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vito.eval.core.registry import settings_from_mapping
from vito.eval.core.result import Result
from vito.eval.core.running import run_evaluation
from vito.eval.dense.segmentation.segment import Segment

VOC_IDS = ("2007_000033", "2007_000129")
ADE_IDS = ("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003")
CROP_KEYS = (0, 8, 20, 60, 166, 293, 294, 582)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def build_voc(shared: Path, tmp: Path, splits: dict[str, tuple[str, ...]] | None = None) -> Path:
    """``tmp/VOCdevkit/VOC2012`` with the two real images and masks; split lists default to val = both ids."""
    source = shared / "segmentation" / "voc2012"
    base = tmp / "VOCdevkit" / "VOC2012"
    for i in VOC_IDS:
        _link(source / "JPEGImages" / f"{i}.jpg", base / "JPEGImages" / f"{i}.jpg")
        _link(source / "SegmentationClass" / f"{i}.png", base / "SegmentationClass" / f"{i}.png")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in (splits or {"val": VOC_IDS}).items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return tmp / "VOCdevkit"


def build_ade20k(shared: Path, tmp: Path, folders: tuple[str, ...] = ("validation",)) -> Path:
    """``tmp/ADEChallengeData2016`` with the three real images and annotations in each of ``folders``."""
    source = shared / "segmentation" / "ade20k"
    base = tmp / "ADEChallengeData2016"
    for folder in folders:
        for i in ADE_IDS:
            _link(source / "images" / f"{i}.jpg", base / "images" / folder / f"{i}.jpg")
            _link(source / "annotations" / f"{i}.png", base / "annotations" / folder / f"{i}.png")
    _link(source / "objectInfo150.csv", base / "objectInfo150.csv")
    return base


def tiny_voc(tmp_path: Path, ids: tuple[str, ...] = ("a", "b")) -> Path:
    """A small VOC 2012 folder (4x3 images, masks of 0/1/255) with a ``pred/`` copy of the masks."""
    root = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "pred"):
        (root / folder).mkdir(parents=True)
    mask = np.array([[0, 1, 1, 0], [0, 1, 255, 0], [0, 0, 0, 0]], dtype=np.uint8)
    for i in ids:
        Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        Image.fromarray(mask, "L").save(root / "SegmentationClass" / f"{i}.png")
        Image.fromarray(mask, "L").save(root / "pred" / f"{i}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return root


def score_voc(root: Path, out: Path) -> Result:
    """``vito eval segment`` scoring ``tiny_voc``'s ``pred/`` into ``out``: the Result."""
    settings = settings_from_mapping(Segment, {"dataset": "voc", "root": root, "predictions": root / "pred"})
    return run_evaluation("segment", settings, out)
