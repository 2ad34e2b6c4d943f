"""COCO and LVIS instance annotations: reading and checking the JSON, and finding each image's file.

Why checked here: pycocotools and faster-coco-eval trust their input (an annotation that names an unknown
image is silently dropped or crashes deep inside with a ``KeyError``), so every user-facing problem is caught
once, at load, with a message naming the file and the offending ids.

Images are found by image id, not by the JSON's ``file_name``: LVIS v0.5 names its images
``COCO_val2014_%012d.jpg`` (and LVIS v1 has no ``file_name`` at all) while the COCO 2017 folders that LVIS
uses hold ``%012d.jpg``. The lookup tries ``{id:012d}.jpg`` first, then the ``file_name``, then the last part
of ``coco_url``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vito.checks import finite_number, integer
from vito.data.images import UnreadableImage, read_image
from vito.errors import DataError, VitoError
from vito.eval.dense.detection.transforms import TARGET_RESOLUTION, eval_view, train_view
from vito.io import read_json

DATASETS: tuple[str, ...] = ("coco", "lvis")
LVIS_FREQUENCIES = ("r", "c", "f")  # rare, common, frequent: LVIS's category groups (APr, APc, APf)


@dataclass
class Annotations:
    """A checked COCO-format instances file (COCO or LVIS)."""

    path: Path
    dataset: str
    data: dict[str, Any]  # the JSON as loaded (images, annotations, categories, ...)
    images: dict[int, dict[str, Any]] = field(init=False)
    categories: dict[int, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.images = {image["id"]: image for image in self.data["images"]}
        self.categories = {category["id"]: category for category in self.data["categories"]}

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.images)

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.categories)

    @property
    def label_index(self) -> dict[int, int]:
        """Category id -> the detector's contiguous label 0..C-1 (in sorted id order)."""
        return {category_id: index for index, category_id in enumerate(self.category_ids)}

    def subset(self, image_ids: Iterable[int]) -> "Annotations":
        """The same file restricted to ``image_ids`` and their annotations (all categories kept)."""
        keep = set(image_ids)
        data = {**self.data, "images": [i for i in self.data["images"] if i["id"] in keep],
                "annotations": [a for a in self.data["annotations"] if a["image_id"] in keep]}
        return Annotations(self.path, self.dataset, data)

    def annotations_of(self, image_id: int) -> list[dict[str, Any]]:
        if not hasattr(self, "_by_image"):
            self._by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in self.images}
            for annotation in self.data["annotations"]:
                self._by_image[annotation["image_id"]].append(annotation)
        return self._by_image[image_id]


def load_annotations(path: str | Path, dataset: str) -> Annotations:
    """Read and check an instances file for ``dataset`` (``coco`` or ``lvis``)."""
    if dataset not in DATASETS:
        raise VitoError(f"unknown detection dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise DataError(f"{path} is not a COCO-format instances file: it needs 'images', 'annotations' and "
                        "'categories' lists (a results file goes to --predictions)")
    _check_records(path, data)
    _check_dataset_kind(path, data, dataset)
    return Annotations(path, dataset, data)


def _check_records(path: Path, data: dict[str, Any]) -> None:
    images = _unique_ids(path, data["images"], "image", ("id", "width", "height"))
    categories = _unique_ids(path, data["categories"], "category", ("id", "name"))
    _unique_ids(path, data["annotations"], "annotation", ("id", "image_id", "category_id", "bbox", "area"))
    for index, image in enumerate(data["images"]):
        if not all(integer(image[k]) and image[k] > 0 for k in ("width", "height")):
            raise DataError(f"{path}: image #{index} (id {image['id']!r}) has width {image['width']!r} and height "
                            f"{image['height']!r}: positive integers are needed")
    for index, annotation in enumerate(data["annotations"]):
        problem = _annotation_problem(annotation)
        if problem:
            raise DataError(f"{path}: annotation #{index} (id {annotation['id']!r}) {problem}")
    for key, known, listing in (("image_id", images, "images"), ("category_id", categories, "categories")):
        unknown = Counter(a[key] for a in data["annotations"] if a[key] not in known)
        if unknown:
            examples = ", ".join(str(i) for i in sorted(unknown)[:5])
            raise DataError(f"{path}: {sum(unknown.values())} annotations reference {len(unknown)} {key} values "
                            f"(e.g. {examples}) that are not in its '{listing}' list")
    if not images:
        raise DataError(f"{path} lists no images")


def _unique_ids(path: Path, records: list[Any], what: str, keys: tuple[str, ...]) -> set[int]:
    """The ids of ``records``, each a dict holding ``keys``; duplicates and missing keys are errors."""
    for index, record in enumerate(records):
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise DataError(f"{path}: {what} #{index} lacks {', '.join(repr(k) for k in missing)}")
    wrong = next((i for i, record in enumerate(records) if not integer(record["id"])), None)
    if wrong is not None:
        raise DataError(f"{path}: {what} #{wrong} has id {records[wrong]['id']!r}: an integer is needed")
    ids = Counter(record["id"] for record in records)
    duplicates = [i for i, n in ids.items() if n > 1]
    if duplicates:
        raise DataError(f"{path}: {len(duplicates)} {what} ids occur more than once (e.g. {duplicates[:5]})")
    return set(ids)


def box_problem(box: Any) -> str | None:
    """Why ``box`` is not a COCO ``[x, y, width, height]`` (four finite numbers, no negative side), or None.

    Why checked: the libraries crash deep inside on strings or short lists, and silently score a box of
    negative area. A zero side is allowed: it is a valid, if empty, box.
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(finite_number(v) for v in box):
        return f"has bbox {box!r}: four finite numbers [x, y, width, height] are needed"
    if box[2] < 0 or box[3] < 0:
        return f"has bbox {box!r} with a negative width or height"
    return None


def _annotation_problem(annotation: dict[str, Any]) -> str | None:
    """Why a ground-truth annotation cannot be scored (ids that are not integers, a bad box, area or iscrowd)."""
    for key in ("image_id", "category_id"):
        if not integer(annotation[key]):
            return f"has {key} {annotation[key]!r}: an integer is needed"
    problem = box_problem(annotation["bbox"])
    if problem:
        return problem
    if not finite_number(annotation["area"]) or annotation["area"] < 0:
        return f"has area {annotation['area']!r}: a finite number of at least 0 is needed"
    if annotation.get("iscrowd", 0) not in (0, 1) or isinstance(annotation.get("iscrowd", 0), float):
        return f"has iscrowd {annotation['iscrowd']!r}: 0 or 1 is needed"
    return None


def _check_dataset_kind(path: Path, data: dict[str, Any], dataset: str) -> None:
    """LVIS categories carry a frequency group; COCO's do not. A mismatch means the wrong --dataset."""
    frequencies = Counter(category.get("frequency") for category in data["categories"])
    if dataset == "lvis":
        bad = {f: n for f, n in frequencies.items() if f not in LVIS_FREQUENCIES}
        if bad:
            raise DataError(f"{path} is not an LVIS file: {sum(bad.values())} categories have no 'frequency' "
                            f"in {LVIS_FREQUENCIES} (use --dataset coco for COCO annotations)")
    elif any(f in LVIS_FREQUENCIES for f in frequencies):
        raise DataError(f"{path} is an LVIS file (its categories carry 'frequency'); use --dataset lvis")


def image_file(images_dir: Path, image: dict[str, Any]) -> Path | None:
    """The file of ``image`` under ``images_dir``, found by id first (see the module docstring); None if absent."""
    names = [f"{image['id']:012d}.jpg"]
    for key in ("file_name", "coco_url"):
        if image.get(key):
            names.append(str(image[key]).rsplit("/", 1)[-1])
    for name in names:
        candidate = images_dir / name
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------------
# Images and targets for fine-tuning


def targets_of(annotations: Annotations, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training boxes (x1, y1, x2, y2) and contiguous labels of an image: crowd regions and empty boxes left out."""
    index = annotations.label_index
    kept = [a for a in annotations.annotations_of(image_id)
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in kept)],
                         dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([index[a["category_id"]] for a in kept], dtype=torch.int64)
    return boxes, labels


class DetectionImages(Dataset):
    """The images of an annotation file with their targets, through the A.3 train or eval view.

    Images whose file is missing are left out and listed in ``skipped`` at construction; an image that
    cannot be decoded, or whose size differs from the annotation's, comes back as ``{"image_id",
    "skipped": (path, reason)}`` so that the loop lists and counts it without stopping. At train, images
    without any box are left out (as detectron2 and torchvision's references do; they hold no FCOS target).
    The train view of item ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)`` (``item(i, e)``).
    """

    def __init__(self, annotations: Annotations, images_dir: str | Path, train: bool,
                 canvas: tuple[int, int] = TARGET_RESOLUTION, seed: int = 0, flip: bool = True) -> None:
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise DataError(f"image folder {images_dir} does not exist")
        self.annotations, self.train, self.canvas, self.seed, self.flip = annotations, train, canvas, seed, flip
        self.items: list[tuple[int, Path]] = []
        self.skipped: list[tuple[str, str]] = []
        self.without_boxes = 0
        for image_id in annotations.image_ids:
            path = image_file(images_dir, annotations.images[image_id])
            if path is None:
                self.skipped.append((f"image {image_id}", f"no file {image_id:012d}.jpg (nor its file_name) "
                                     f"under {images_dir}"))
            elif train and len(targets_of(annotations, image_id)[1]) == 0:
                self.without_boxes += 1
            else:
                self.items.append((image_id, path))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, 0)

    def item(self, index: int, epoch: int) -> dict[str, Any]:
        """Item ``index`` as seen in ``epoch`` (the train view's randomness depends on both, and the seed)."""
        image_id, path = self.items[index]
        try:
            image = read_image(path)
        except UnreadableImage as error:
            return {"image_id": image_id, "skipped": (str(path), str(error))}
        record = self.annotations.images[image_id]
        size = (record["height"], record["width"])
        if tuple(image.shape[-2:]) != size:
            return {"image_id": image_id, "skipped": (str(path), f"image is {image.shape[-1]}x{image.shape[-2]} "
                                                                 f"but its annotations are for {size[1]}x{size[0]}")}
        boxes, labels = targets_of(self.annotations, image_id)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            view = train_view(image, boxes, rng, self.canvas, flip=self.flip)
        else:
            view = eval_view(image, boxes, self.canvas)
        return {"image_id": image_id, "image": view.image, "boxes": view.boxes, "labels": labels[view.keep],
                "scale": view.scale, "size": size}


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: lists of images / targets / ids / scales / original sizes, plus the skipped (path, reason)."""
    kept = [s for s in samples if "skipped" not in s]
    return {
        "images": [s["image"] for s in kept],
        "targets": [{"boxes": s["boxes"], "labels": s["labels"]} for s in kept],
        "image_ids": [s["image_id"] for s in kept],
        "scales": [s["scale"] for s in kept],
        "sizes": [s["size"] for s in kept],
        "skipped": [s["skipped"] for s in samples if "skipped" in s],
    }
