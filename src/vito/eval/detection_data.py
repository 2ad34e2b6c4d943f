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

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vito.errors import DataError, VitoError

Dataset = Literal["coco", "lvis"]
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

    def annotations_of(self, image_id: int) -> list[dict[str, Any]]:
        if not hasattr(self, "_by_image"):
            self._by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in self.images}
            for annotation in self.data["annotations"]:
                self._by_image[annotation["image_id"]].append(annotation)
        return self._by_image[image_id]


def read_json(path: str | Path, what: str) -> Any:
    """JSON from ``path``; a missing, non-UTF-8 or malformed file is a ``DataError`` naming ``what`` it is."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError as error:
        raise DataError(f"{what} {path} does not exist") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{what} {path} is not a readable JSON file: {error}") from error


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
    ids = Counter(record["id"] for record in records)
    duplicates = [i for i, n in ids.items() if n > 1]
    if duplicates:
        raise DataError(f"{path}: {len(duplicates)} {what} ids occur more than once (e.g. {duplicates[:5]})")
    return set(ids)


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
