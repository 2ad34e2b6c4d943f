"""J&F: DAVIS region similarity (J) and boundary F-measure (F), as the official davis2017-evaluation code.

``score_results`` scores a results folder (``RESULTS/<sequence>/<frame>.png``) against the ground truth with
the official semantics (docs/metrics.md, DAVIS): first and last frames dropped (and never read from the
results), objects weighted equally, GT void counted as background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.video.davis_data import find_sequences, read_object_ids, read_result_png

BOUND_TH = 0.008  # official boundary tolerance: a fraction of the image diagonal


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: intersection over union of two boolean masks; 1 when both are empty."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from the right, bottom or bottom-right neighbour (outside = background)."""
    seg = mask.astype(bool)
    right, below, diag = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _matched(points: np.ndarray, targets: np.ndarray, radius: float) -> int:
    """How many ``points`` lie within Euclidean distance ``radius`` of some target (= disk dilation test)."""
    from scipy.spatial import cKDTree  # scipy.spatial takes a second to import: kept out of `vito eval --help`

    distance, _ = cKDTree(targets).query(points, k=1, distance_upper_bound=radius + 1e-9)
    return int(np.isfinite(distance).sum())


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: boundary precision/recall with a tolerance of ``ceil(bound_th · diagonal)`` pixels."""
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        pred_points, gt_points = np.argwhere(pred_b), np.argwhere(gt_b)
        precision = _matched(pred_points, gt_points, radius) / n_pred
        recall = _matched(gt_points, pred_points, radius) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def per_object_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, recall (fraction > 0.5) and decay (first quarter minus last quarter) over kept frames."""
    values = np.asarray(values, dtype=np.float64)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return {
        "mean": float(np.nanmean(values)),
        "recall": float(np.nanmean(values > 0.5)),
        "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[3])),
    }


def evaluate_sequence(gt_ids: np.ndarray, pred_ids: np.ndarray) -> dict[int, dict[str, list[float]]]:
    """Per-object, per-kept-frame J and F of one sequence: ``{object: {"J": [...], "F": [...]}}``.

    ``gt_ids``/``pred_ids`` are ``[T, H, W]`` id maps of the whole sequence. Objects are
    ``1..max(first GT frame)``; the first and last frames are dropped, as in the official code.
    """
    return evaluate_kept_frames(gt_ids[1:-1], pred_ids[1:-1], num_objects=int(gt_ids[0].max()))


def evaluate_kept_frames(
    gt_ids: np.ndarray, pred_ids: np.ndarray, num_objects: int
) -> dict[int, dict[str, list[float]]]:
    """J and F per object over frames that are already the scored ones (the official ``[1:-1]``).

    A predicted id above ``num_objects`` in these frames is an error, as in the official code (which never
    reads the first and last results, so ids there do not matter).
    """
    if int(pred_ids.max(initial=0)) > num_objects:
        raise VitoError(f"the results hold object id {int(pred_ids.max())} but the ground truth has {num_objects}")
    scores = {}
    for obj in range(1, num_objects + 1):
        pairs = [(g == obj, p == obj) for g, p in zip(gt_ids, pred_ids)]
        scores[obj] = {"J": [region_similarity(g, p) for g, p in pairs],
                       "F": [boundary_f_measure(g, p) for g, p in pairs]}
    return scores


def summarize(per_sequence: dict[str, dict[int, dict[str, list[float]]]]) -> dict[str, Any]:
    """Global J/F mean, recall, decay over all objects of all sequences (objects weigh equally)."""
    objects = {}
    for name, scores in per_sequence.items():
        for obj, values in scores.items():
            objects[f"{name}_{obj}"] = {m: per_object_statistics(values[m]) for m in ("J", "F")}
    if not objects:
        raise VitoError("no objects to score")
    overall = {}
    for metric in ("J", "F"):
        for stat in ("mean", "recall", "decay"):
            overall[f"{metric}-{stat.capitalize()}"] = float(np.mean([o[metric][stat] for o in objects.values()]))
    overall["J&F-Mean"] = (overall["J-Mean"] + overall["F-Mean"]) / 2
    per_object = {
        key: {"J-Mean": o["J"]["mean"], "F-Mean": o["F"]["mean"], "J&F-Mean": (o["J"]["mean"] + o["F"]["mean"]) / 2}
        for key, o in objects.items()
    }
    return {"global": overall, "per_object": per_object}


def score_results(
    davis_root: str | Path,
    results_dir: str | Path,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    layout: str = "auto",
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Score a results folder against the ground truth, like the official ``evaluation_method.py``.

    As there, only the scored frames (all annotated frames but the first and the last) need a result PNG.
    ``max_frames`` scores only the first frames of each sequence (for quick propagation runs).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"results folder not found: {results_dir}")
    per_sequence, frames_scored, frames_annotated = {}, 0, 0
    for sequence in progress(find_sequences(davis_root, resolution, sequences), desc="J&F", unit="seq"):
        annotations = sequence.annotations[:max_frames]
        if len(annotations) < 3:
            raise DataError(f"{sequence.name}: J&F needs 3 or more annotated frames "
                            "(the first and last are not scored)")
        try:
            gt = np.stack([read_object_ids(p, layout) for p in annotations])
            preds = np.stack([read_result_png(results_dir / sequence.name / a.name, gt.shape[1:])
                              for a in annotations[1:-1]])
            per_sequence[sequence.name] = evaluate_kept_frames(gt[1:-1], preds, num_objects=int(gt[0].max()))
        except (DataError, VitoError, ValueError) as error:
            raise DataError(f"DAVIS sequence {sequence.name}: {error}") from error
        frames_scored += len(annotations) - 2
        frames_annotated += max(len(sequence.annotations) - 2, 0)
    summary = summarize(per_sequence)
    summary["per_frame"] = {name: {str(o): v for o, v in s.items()} for name, s in per_sequence.items()}
    summary["frames_scored"], summary["frames_annotated"] = frames_scored, frames_annotated
    return summary
