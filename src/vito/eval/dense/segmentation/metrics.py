"""Semantic-segmentation scores exactly as mmsegmentation's ``IoUMetric`` computes them (docs/segmentation.md).

Why not a mean of per-image IoUs: the papers report mmsegmentation's numbers, which sum four per-class areas
(intersection, union, prediction, label) over the whole dataset first and only then take ratios. On any
dataset with unevenly sized objects the two differ, so ``SegmentationAreas`` accumulates areas and
``segmentation_scores`` turns them into numbers:

- per image, pixels whose label is the ignore index (255) are dropped; prediction values outside
  ``0..C-1`` fall out of every histogram (such a pixel still counts in its label's area: it is wrong);
- ``aAcc = ΣI / ΣL``; ``IoU_c = I_c / U_c``; ``Acc_c = I_c / L_c``; ``mIoU`` and ``mAcc`` are NaN-means: a class
  whose union (for IoU) or label area (for Acc) is zero over the dataset is left out, as ``np.nanmean`` does;
- ``reduce_zero_label`` (ADE20K): label 0 ("other") becomes 255, every other label k becomes k-1; the dataset
  reader applies it (``vito.eval.dense.segmentation.data``), as mmseg's ``LoadAnnotations`` does.

The official ADE20K SceneParsing devkit averages IoU over *all* classes instead, a class absent from both
prediction and ground truth counting 0 (its ``I / (U + eps)``, with ``eps`` added once per image):
``devkit_miou`` reports it separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vito.eval.dense.segmentation.data import IGNORE_INDEX

DEVKIT_EPS = float(np.spacing(1))  # the devkit's ``np.spacing(1)`` per image


def intersect_and_union(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (intersection, union, prediction, label) pixel areas of one image, as int64 arrays.

    ``pred`` and ``label`` are integer maps of the same shape (the prediction at the image's original size).
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    pred = pred.astype(np.int64).ravel()
    label = label.astype(np.int64).ravel()
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    in_range = (pred >= 0) & (pred < num_classes)
    label_area = _histogram(label[(label >= 0) & (label < num_classes)], num_classes)
    pred_area = _histogram(pred[in_range], num_classes)
    hit = pred[in_range & (pred == label)]
    intersect = _histogram(hit, num_classes)
    return intersect, pred_area + label_area - intersect, pred_area, label_area


def _histogram(values: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(values, minlength=num_classes)[:num_classes].astype(np.int64)


@dataclass
class SegmentationAreas:
    """Per-class areas summed over the images seen so far (what ``IoUMetric.compute_metrics`` sums)."""

    num_classes: int
    intersect: np.ndarray = field(default=None)  # type: ignore[assignment]
    union: np.ndarray = field(default=None)  # type: ignore[assignment]
    pred: np.ndarray = field(default=None)  # type: ignore[assignment]
    label: np.ndarray = field(default=None)  # type: ignore[assignment]
    images: int = 0
    out_of_range_pixels: int = 0  # evaluated pixels whose prediction is not a class (they count as wrong)
    out_of_range_values: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name in ("intersect", "union", "pred", "label"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, dtype=np.int64))

    def update(self, pred: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> None:
        """Add one image (prediction and label at the same, original size)."""
        areas = intersect_and_union(pred, label, self.num_classes, ignore_index)
        self.intersect += areas[0]
        self.union += areas[1]
        self.pred += areas[2]
        self.label += areas[3]
        self.images += 1
        evaluated = pred[label != ignore_index].astype(np.int64)
        outside = evaluated[(evaluated < 0) | (evaluated >= self.num_classes)]
        if outside.size:
            self.out_of_range_pixels += int(outside.size)
            self.out_of_range_values.update(int(v) for v in np.unique(outside))

    def as_array(self) -> np.ndarray:
        """``[4, C]`` int64 areas plus nothing else: what processes all-reduce to combine their shares."""
        return np.stack([self.intersect, self.union, self.pred, self.label])


@dataclass
class SegmentationScores:
    """Fractions in [0, 1] (mmseg prints them x100); per-class arrays hold NaN where a class is undefined."""

    aacc: float
    miou: float
    macc: float
    iou: np.ndarray
    acc: np.ndarray
    devkit_miou: float  # official ADE20K devkit: mean over all classes, absent ones as 0


def segmentation_scores(areas: SegmentationAreas) -> SegmentationScores:
    """aAcc, mIoU, mAcc and per-class IoU/Acc from dataset-level areas (mmseg's ``total_area_to_metrics``)."""
    intersect = areas.intersect.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / areas.union
        acc = intersect / areas.label
        aacc = intersect.sum() / areas.label.sum() if areas.label.sum() else float("nan")
    devkit = intersect / (areas.union + areas.images * DEVKIT_EPS) if areas.images else np.full_like(iou, np.nan)
    return SegmentationScores(
        aacc=float(aacc), miou=_nanmean(iou), macc=_nanmean(acc), iou=iou, acc=acc, devkit_miou=float(devkit.mean())
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def per_class_table(areas: SegmentationAreas, scores: SegmentationScores, names: Sequence[str]) -> list[dict]:
    """One row per class: IoU, Acc (None where undefined) and the four summed areas."""
    rows = []
    for c in range(areas.num_classes):
        rows.append({
            "class": c, "name": names[c] if c < len(names) else str(c),
            "iou": _or_none(scores.iou[c]), "acc": _or_none(scores.acc[c]),
            "intersect": int(areas.intersect[c]), "union": int(areas.union[c]),
            "pred_area": int(areas.pred[c]), "label_area": int(areas.label[c]),
        })
    return rows


def _or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
