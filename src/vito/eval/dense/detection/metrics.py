"""COCO and LVIS detection metrics from faster-coco-eval, with the input checked first (docs/detection.md).

Why faster-coco-eval: it gives pycocotools' ``COCOeval`` numbers (all 12 summary numbers on the shared
43-image set, bbox and segm, agree to 1.1e-16, the last bit of a float's summation order), is 3-5x
faster (860 images: bbox 0.58 s vs 3.00 s, segm 0.97 s vs 2.79 s on this machine), and has an LVIS mode
(``lvis_style=True``) where PyPI's ``lvis`` 0.5.3 no longer runs under numpy 2 (with ``np.float`` patched
back in for a one-off check, lvis-api's LVISEval agreed with it to 1.1e-16 on all 13 LVIS numbers, bbox and
segm, for 2174 constructed detections on ``lvis_val_100.json``). Nothing here recomputes a
metric: this module only checks the input, applies LVIS's 300-detections-per-image cap the way lvis-api's
``LVISResults`` does (top scores per image, ties in file order), and names the library's numbers.

Undefined metrics (COCO's -1: e.g. no ground truth of any category in an area range) are ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_api

from vito.checks import finite_number, integer
from vito.errors import DataError, VitoError
from vito.eval.dense.detection.data import Annotations, box_problem
from vito.io import read_json

IOU_TYPES = ("bbox", "segm")
LVIS_MAX_DETS = 300  # lvis-api's official detections per image (LVISResults max_dets, LVISEval max_dets)

# (our key, faster-coco-eval's index into COCOeval.stats, the line pycocotools' summarize() prints it on)
COCO_METRICS: tuple[tuple[str, int, str], ...] = (
    ("AP", 0, "AP @[IoU=0.50:0.95, area=all, maxDets=100]"),
    ("AP50", 1, "AP @[IoU=0.50, area=all, maxDets=100]"),
    ("AP75", 2, "AP @[IoU=0.75, area=all, maxDets=100]"),
    ("APs", 3, "AP @[IoU=0.50:0.95, area=small, maxDets=100]"),
    ("APm", 4, "AP @[IoU=0.50:0.95, area=medium, maxDets=100]"),
    ("APl", 5, "AP @[IoU=0.50:0.95, area=large, maxDets=100]"),
    ("AR1", 6, "AR @[IoU=0.50:0.95, area=all, maxDets=1]"),
    ("AR10", 7, "AR @[IoU=0.50:0.95, area=all, maxDets=10]"),
    ("AR100", 8, "AR @[IoU=0.50:0.95, area=all, maxDets=100]"),
    ("ARs", 9, "AR @[IoU=0.50:0.95, area=small, maxDets=100]"),
    ("ARm", 10, "AR @[IoU=0.50:0.95, area=medium, maxDets=100]"),
    ("ARl", 11, "AR @[IoU=0.50:0.95, area=large, maxDets=100]"),
)
# (our key, faster-coco-eval's stats_as_dict key in LVIS mode, lvis-api's results key)
LVIS_METRICS: tuple[tuple[str, str, str], ...] = (
    ("AP", "AP_all", "AP @[IoU=0.50:0.95, area=all, maxDets=300]"),
    ("AP50", "AP_50", "AP @[IoU=0.50, area=all, maxDets=300]"),
    ("AP75", "AP_75", "AP @[IoU=0.75, area=all, maxDets=300]"),
    ("APs", "AP_small", "AP @[IoU=0.50:0.95, area=small, maxDets=300]"),
    ("APm", "AP_medium", "AP @[IoU=0.50:0.95, area=medium, maxDets=300]"),
    ("APl", "AP_large", "AP @[IoU=0.50:0.95, area=large, maxDets=300]"),
    ("APr", "APr", "AP @[IoU=0.50:0.95, area=all, maxDets=300, rare categories]"),
    ("APc", "APc", "AP @[IoU=0.50:0.95, area=all, maxDets=300, common categories]"),
    ("APf", "APf", "AP @[IoU=0.50:0.95, area=all, maxDets=300, frequent categories]"),
    ("AR300", "AR_all", "AR @[IoU=0.50:0.95, area=all, maxDets=300]"),
    ("ARs", "AR_small", "AR @[IoU=0.50:0.95, area=small, maxDets=300]"),
    ("ARm", "AR_medium", "AR @[IoU=0.50:0.95, area=medium, maxDets=300]"),
    ("ARl", "AR_large", "AR @[IoU=0.50:0.95, area=large, maxDets=300]"),
)


def metric_labels(dataset: str) -> dict[str, str]:
    """Our metric keys and their COCO/LVIS print-out labels, in print-out order."""
    rows = LVIS_METRICS if dataset == "lvis" else COCO_METRICS
    return {key: label for key, _, label in rows}


@dataclass
class DetectionScores:
    """What one evaluation of a results list gives."""

    metrics: dict[str, float | None]  # metric_labels(dataset) keys, unrounded, None = undefined
    per_category: list[dict[str, Any]]  # {"category_id", "name", "AP", ("frequency")} per category
    num_detections: int  # after the LVIS cap
    images_with_detections: int
    dropped_by_cap: int  # LVIS: detections beyond the 300 best of their image


def load_results(path: str | Path, annotations: Annotations, iou_type: str) -> list[dict[str, Any]]:
    """A COCO results file (a JSON list of detections) checked against ``annotations``."""
    results = read_json(path, "results file")
    check_results(results, annotations, iou_type, source=str(path))
    return results


def check_results(results: Any, annotations: Annotations, iou_type: str, source: str = "results") -> None:
    """Every detection must name an image and a category of ``annotations`` and carry what ``iou_type`` needs.

    Unknown ids mean the file belongs to another dataset or split (e.g. COCO results scored against LVIS):
    the libraries would silently drop or crash on them, so they are an error naming the ids.
    """
    if iou_type not in IOU_TYPES:
        raise VitoError(f"unknown --iou-type {iou_type!r}; choose one of {', '.join(IOU_TYPES)}")
    if not isinstance(results, list):
        raise DataError(f"{source} is not a COCO results file: expected a JSON list of detections "
                        "(an annotation file goes to --val-ann)")
    needed = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation")
    for index, detection in enumerate(results):
        missing = [k for k in needed if not isinstance(detection, dict) or k not in detection]
        if missing:
            raise DataError(f"{source}: detection #{index} lacks {', '.join(map(repr, missing))} "
                            f"(needed for --iou-type {iou_type})")
        problem = _malformed(detection, iou_type)
        if problem:
            raise DataError(f"{source}: detection #{index} (image_id {detection['image_id']!r}) {problem}")
    if iou_type == "segm":
        _check_ground_truth_masks(annotations)
    for key, known, what in (("image_id", annotations.images, "images"),
                             ("category_id", annotations.categories, "categories")):
        unknown = Counter(d[key] for d in results if d[key] not in known)
        if unknown:
            examples = ", ".join(str(i) for i in sorted(unknown, key=str)[:5])
            raise DataError(
                f"{source}: {sum(unknown.values())} detections name {len(unknown)} {key} values (e.g. {examples}) "
                f"that are not among the {len(known)} {what} of {annotations.path}; is it a results file for "
                "another dataset or split?"
            )


def _malformed(detection: dict[str, Any], iou_type: str) -> str | None:
    """Why a detection's score or box cannot be scored (the libraries would crash on it or score it silently
    as a box of negative area), or None."""
    for key in ("image_id", "category_id"):
        if not integer(detection[key]):
            return f"has {key} {detection[key]!r}: an integer is needed"
    if not finite_number(detection["score"]):
        return f"has score {detection['score']!r}: a finite number is needed"
    if iou_type != "bbox":
        return segmentation_problem(detection["segmentation"], None)
    return box_problem(detection["bbox"])


def segmentation_problem(segmentation: Any, size: tuple[int, int] | None) -> str | None:
    """Why a COCO ``segmentation`` (polygons, or an RLE ``{size, counts}``) cannot be scored, or None.

    Why checked: the mask library fails on these deep inside (``TypeError``, a pybind11 cast error, "RLE
    counts exceed the mask dimensions"). ``size`` (height, width) is the image's, needed for polygons.
    """
    if isinstance(segmentation, list):
        if size is None:  # as pycocotools' loadRes: a results file holds masks as RLE
            return "has a polygon segmentation: results need RLE masks {size: [h, w], counts}"
        if not all(isinstance(p, list) and len(p) % 2 == 0 and all(finite_number(v) for v in p)
                                   for p in segmentation):
            return "has a polygon segmentation that is not lists of x, y pairs of finite numbers"
        return None
    if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, list))
            and isinstance(segmentation.get("size"), list) and len(segmentation["size"]) == 2
            and all(integer(v) and v >= 0 for v in segmentation["size"])):
        return f"has segmentation {str(segmentation)[:60]!r}: polygons or an RLE {{size: [h, w], counts}} are needed"
    try:
        height, width = segmentation["size"]
        rle = mask_api.frPyObjects(segmentation, height, width) if isinstance(segmentation["counts"], list) \
            else segmentation
        mask_api.area(rle)  # decodes the counts
    except (TypeError, ValueError, RuntimeError) as error:
        return f"has an RLE segmentation that cannot be decoded ({error})"
    return None


def _check_ground_truth_masks(annotations: Annotations) -> None:
    """Every annotation of ``annotations`` must carry a scorable ``segmentation`` for ``--iou-type segm``."""
    for index, annotation in enumerate(annotations.data["annotations"]):
        image = annotations.images[annotation["image_id"]]
        problem = ("lacks 'segmentation' (needed for --iou-type segm)" if "segmentation" not in annotation else
                   segmentation_problem(annotation["segmentation"], (image["height"], image["width"])))
        if problem:
            raise DataError(f"{annotations.path}: annotation #{index} (id {annotation['id']!r}) {problem}")


def cap_per_image(results: list[dict[str, Any]], max_dets: int) -> list[dict[str, Any]]:
    """The ``max_dets`` highest-scoring detections of each image, as lvis-api's ``LVISResults`` keeps them."""
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for detection in results:
        by_image[detection["image_id"]].append(detection)
    kept = []
    for detections in by_image.values():
        if len(detections) > max_dets:
            detections = sorted(detections, key=lambda d: d["score"], reverse=True)[:max_dets]
        kept.extend(detections)
    return kept


def score_detections(annotations: Annotations, results: list[dict[str, Any]], iou_type: str) -> DetectionScores:
    """The COCO (12 numbers) or LVIS (AP, APr/APc/APf, ...) metrics of checked ``results``."""
    check_results(results, annotations, iou_type)
    lvis = annotations.dataset == "lvis"
    kept = cap_per_image(results, LVIS_MAX_DETS) if lvis else results
    evaluator = _run_cocoeval(annotations, kept, iou_type, lvis)
    if lvis:
        raw = evaluator.stats_as_dict
        metrics = {key: _defined(raw[source]) for key, source, _ in LVIS_METRICS}
    else:
        metrics = {key: _defined(evaluator.stats[index]) for key, index, _ in COCO_METRICS}
    return DetectionScores(
        metrics=metrics,
        per_category=_per_category(annotations, evaluator),
        num_detections=len(kept),
        images_with_detections=len({d["image_id"] for d in kept}),
        dropped_by_cap=len(results) - len(kept),
    )


def _run_cocoeval(annotations: Annotations, results: list[dict[str, Any]], iou_type: str,
                  lvis: bool) -> COCOeval_faster:
    """evaluate + accumulate + summarize on copies (the library writes into the dicts it is given)."""
    with contextlib.redirect_stdout(io.StringIO()):  # summarize() prints its table
        ground_truth = COCO(copy.deepcopy(annotations.data))
        detections = ground_truth.loadRes(copy.deepcopy(results))
        evaluator = COCOeval_faster(ground_truth, detections, iou_type, lvis_style=lvis, print_function=_quiet)
        if lvis:
            evaluator.params.maxDets = [LVIS_MAX_DETS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _quiet(*_: Any) -> None:
    """The library's progress messages are not wanted in a results run."""


def _defined(value: float) -> float | None:
    """COCOeval marks an undefined average with -1."""
    return None if value < 0 else float(value)


def _per_category(annotations: Annotations, evaluator: COCOeval_faster) -> list[dict[str, Any]]:
    """AP per category from the accumulated precision array (area all, largest maxDets), as detectron2 reports it."""
    precision = np.asarray(evaluator.eval["precision"])  # [IoU thresholds, recall points, categories, areas, maxDets]
    rows = []
    for index, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        category = annotations.categories[category_id]
        row: dict[str, Any] = {"category_id": category_id, "name": category["name"],
                               "AP": float(values.mean()) if values.size else None}
        if "frequency" in category:
            row["frequency"] = category["frequency"]
        rows.append(row)
    return rows
