"""Semantic-segmentation datasets in the layouts they ship in: PASCAL VOC 2012 and ADEChallengeData2016.

Why a reader of our own: the fine-tune and the scoring-only mode must agree on ids, mask decoding and
``reduce_zero_label`` to the pixel, and a real download is messy (a missing mask, a colour PNG where an
index PNG belongs). Masks are class-index PNGs (mode ``P``: the palette is ignored, the indices are the
classes; or mode ``L``). Images and masks are read by ``vito.data.images``: a missing or unreadable file is an
``UnreadableImage`` that callers skip and count; ground-truth values outside the classes (other than 255) are
a ``DataError`` naming file and values.

- VOC 2012: ``ROOT/JPEGImages/<id>.jpg``, masks in ``SegmentationClass/`` (or ``SegmentationClassAug/``, the
  SBD-augmented set; ``trainaug`` looks there first), ids in ``ImageSets/Segmentation/{train,val,trainaug}.txt``.
  ROOT may be the VOC2012 folder, its parent ``VOCdevkit`` or the folder holding ``VOCdevkit``.
- ADE20K: ``ROOT/images/{training,validation}/<id>.jpg`` and ``ROOT/annotations/.../<id>.png`` (0 = "other",
  1..150 = classes); labels are reduced (0 -> 255, k -> k-1) so that the classes are 0..149. ROOT may be
  ``ADEChallengeData2016`` or its parent. Class names come from ``objectInfo150.csv``/``.txt`` when present.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vito.data.images import read_index_png
from vito.errors import DataError
from vito.io import inside_name, read_text

DatasetName = Literal["voc", "ade20k"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
ADE20K_NUM_CLASSES = 150
ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
VOC_SPLITS = ("train", "val", "trainaug")
IGNORE_INDEX = 255  # VOC's object boundaries and "void"; ADE20K's "other" after reduce_zero_label


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` (ADE20K): 0 -> 255, k -> k-1 (and a stray 255 stays 255)."""
    label = label.astype(np.int64)
    reduced = label - 1
    reduced[label == 0] = IGNORE_INDEX
    reduced[reduced == IGNORE_INDEX - 1] = IGNORE_INDEX
    return reduced


@dataclass(frozen=True)
class Item:
    """One image of a split: its id and where its picture and ground truth should be."""

    id: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class SegmentationDataset:
    """A split of a dataset: items in split order, the class names, and how labels are decoded."""

    name: DatasetName
    root: Path
    split: str
    items: tuple[Item, ...]
    class_names: tuple[str, ...]
    reduce_zero_label: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read_mask(self, item: Item) -> np.ndarray:
        """int64 ``[H, W]`` labels in ``0..C-1`` or 255 (after ``reduce_zero_label`` for ADE20K)."""
        label = read_index_png(item.mask, "ground-truth mask")
        if self.reduce_zero_label:
            label = reduce_zero_label(label)
        bad = np.unique(label[(label != IGNORE_INDEX) & ((label < 0) | (label >= self.num_classes))])
        if bad.size:
            shown = bad + 1 if self.reduce_zero_label else bad  # name the values as they are in the file
            raise DataError(
                f"{item.mask}: ground-truth values {shown.tolist()} lie outside the {self.num_classes} classes of "
                f"{self.name} (allowed: {'1..150 and 0' if self.reduce_zero_label else f'0..{self.num_classes - 1}'}"
                f" and 255 = ignore)"
            )
        return label


def open_dataset(name: DatasetName, root: Path, split: str) -> SegmentationDataset:
    """The split ``split`` of dataset ``name`` under ``root`` (a ``DataError`` naming what is missing)."""
    root = Path(root)
    if name == "voc":
        return _open_voc(root, split)
    if name == "ade20k":
        return _open_ade20k(root, split)
    raise DataError(f"unknown segmentation dataset {name!r}: voc or ade20k")


def _open_voc(root: Path, split: str) -> SegmentationDataset:
    if split not in VOC_SPLITS:
        raise DataError(f"VOC split {split!r} is not one of {', '.join(VOC_SPLITS)}")
    base = _first_dir([root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"], "ImageSets")
    if base is None:
        raise DataError(f"{root} is not a VOC 2012 folder: no ImageSets/Segmentation under it, VOC2012/ or "
                        "VOCdevkit/VOC2012/")
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DataError(f"VOC split list {list_file} does not exist")
    ids = [inside_name(line.split()[0], f"VOC split list {list_file} line {number}")
           for number, line in enumerate(read_text(list_file, "VOC split list").splitlines(), start=1) if line.strip()]
    if not ids:
        raise DataError(f"VOC split list {list_file} is empty")
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:  # an image listed twice would be scored twice and the coverage would count it twice
        raise DataError(f"VOC split list {list_file}: {len(repeated)} ids occur more than once (e.g. {repeated[:5]})")
    folders = ["SegmentationClassAug", "SegmentationClass"] if split == "trainaug" else \
        ["SegmentationClass", "SegmentationClassAug"]
    folders = [base / f for f in folders if (base / f).is_dir()]
    if not folders:
        raise DataError(f"{base} has neither SegmentationClass/ nor SegmentationClassAug/")
    items = tuple(Item(i, base / "JPEGImages" / f"{i}.jpg", _first_file([f / f"{i}.png" for f in folders]))
                  for i in ids)
    return SegmentationDataset("voc", base, split, items, VOC_CLASSES, reduce_zero_label=False)


def _open_ade20k(root: Path, split: str) -> SegmentationDataset:
    if split not in ADE20K_SPLITS:
        raise DataError(f"ADE20K split {split!r} is not one of train, val (or training, validation)")
    folder = ADE20K_SPLITS[split]
    base = _first_dir([root, root / "ADEChallengeData2016"], "images")
    if base is None or not (base / "annotations").is_dir():
        raise DataError(f"{root} is not an ADEChallengeData2016 folder: no images/ and annotations/ under it")
    images = sorted((base / "images" / folder).glob("*.jpg"))
    if not images:
        raise DataError(f"no images in {base / 'images' / folder}: the {split} split is empty")
    items = tuple(Item(p.stem, p, base / "annotations" / folder / f"{p.stem}.png") for p in images)
    return SegmentationDataset("ade20k", base, split, items, _ade20k_names(base), reduce_zero_label=True)


def _ade20k_names(base: Path) -> tuple[str, ...]:
    """Names from objectInfo150.csv (comma-separated) or objectInfo150.txt (tab-separated), else numbers."""
    for path, delimiter in ((base / "objectInfo150.csv", ","), (base / "objectInfo150.txt", "\t")):
        if path.is_file():
            rows = list(csv.DictReader(io.StringIO(read_text(path, "ADE20K class list"), newline=""),
                                       delimiter=delimiter))
            names = [row.get("Name", "").strip() for row in rows]
            if len(names) == ADE20K_NUM_CLASSES and all(names):
                return tuple(names)
    return tuple(f"class {k + 1}" for k in range(ADE20K_NUM_CLASSES))


def _first_dir(candidates: list[Path], child: str) -> Path | None:
    return next((c for c in candidates if (c / child).is_dir()), None)


def _first_file(candidates: list[Path]) -> Path:
    return next((c for c in candidates if c.is_file()), candidates[0])
