"""Which points of the feature pyramid learn which box: FCOS*'s two assignments, per image (docs/detection.md).

* ``atss``: adaptive training sample selection (Zhang et al., CVPR 2020). Each point carries a square anchor
  box of side ``anchor_scale * stride`` (8 strides: ATSS's and TOOD's octave base scale). For each ground-truth
  box, on every pyramid level the ``topk`` points whose centres are nearest to the box centre are candidates;
  the box's IoU threshold is the mean plus the standard deviation of the candidates' anchor IoUs; a candidate
  is positive when its IoU reaches the threshold and its centre lies inside the box.
* ``task_aligned``: task-alignment learning's assignment (Feng et al., TOOD, ICCV 2021). For each box the
  alignment metric ``t = s**alpha * u**beta`` of every point (``s``: the predicted probability of the box's
  class, ``u``: the IoU of the predicted box with it) ranks the points; the ``topk`` best (over all levels) whose
  centres lie inside the box and whose ``t`` is above 0 are positive, and learn the normalised metric
  ``t / max t * max u`` (maxima over the box's positives) as their classification target.

Both: a point claimed by several boxes goes to the one it overlaps most (ATSS: anchor IoU; TOOD: IoU of the
predicted box), the first of equal ones; "inside" means at least 0.01 pixels from every side (mmdetection's
margin). Candidates are taken in a stable order (the lower point index wins a tie), so the assignment does not
depend on the sorting kernel of a device. Everything here is a function of its inputs, computed without
gradients: the loss differentiates the predictions, never the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

ATSS_TOPK = 9  # candidates per level and box (ATSS; mmdetection configs/atss, configs/tood initial_assigner)
ANCHOR_SCALE = 8  # anchor side in strides (octave_base_scale=8, scales_per_octave=1)
TAL_TOPK = 13  # TOOD's task-aligned assigner topk (configs/tood)
TAL_ALPHA, TAL_BETA = 1.0, 6.0  # TOOD's alignment exponents (train_cfg alpha=1, beta=6)
INSIDE_MARGIN = 0.01


@dataclass
class Assignment:
    """Per point: the index of its ground-truth box (-1: background) and, for task alignment, its target."""

    matched: torch.Tensor  # int64 [N]
    quality: torch.Tensor | None = None  # float [N]: the normalised alignment metric (0 for background)


def centres_inside(centres: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """bool [N, G]: point n lies inside box g, at least ``INSIDE_MARGIN`` from each side."""
    x, y = centres[:, 0:1], centres[:, 1:2]
    sides = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=-1)
    return sides.min(dim=-1).values > INSIDE_MARGIN


def _claim(positive: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Per point the box among its positive pairs that it overlaps most (-1 when it has none)."""
    masked = torch.where(positive, overlaps, torch.full_like(overlaps, -1.0))
    best, index = masked.max(dim=1)  # torch.max returns the first of equal maxima
    return torch.where(best >= 0, index, torch.full_like(index, -1))


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Row indices of the ``k`` smallest values of each column, ties to the lower index."""
    return torch.sort(values, dim=0, stable=True).indices[:k]


@torch.no_grad()
def atss(centres: torch.Tensor, strides: torch.Tensor, level_sizes: list[int], boxes: torch.Tensor,
         topk: int = ATSS_TOPK, anchor_scale: float = ANCHOR_SCALE) -> Assignment:
    """ATSS on the points ``centres`` [N, 2] (levels concatenated, ``level_sizes`` points each; ``strides`` [N])
    for the ground-truth ``boxes`` [G, 4] (x1, y1, x2, y2)."""
    count, num_boxes = len(centres), len(boxes)
    if num_boxes == 0 or count == 0:
        return Assignment(torch.full((count,), -1, dtype=torch.int64, device=centres.device))
    half = (anchor_scale * strides / 2)[:, None]
    anchors = torch.cat([centres - half, centres + half], dim=1)
    overlaps = box_iou(anchors, boxes)  # [N, G]
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = (centres[:, None, :] - box_centres[None, :, :]).square().sum(dim=-1)  # squared, [N, G]
    candidates, start = [], 0
    for size in level_sizes:
        candidates.append(_smallest(distances[start:start + size], min(topk, size)) + start)
        start += size
    candidates = torch.cat(candidates)  # [K, G]: the candidates of box g in column g
    candidate_iou = overlaps.gather(0, candidates)
    unbiased = len(candidates) > 1  # ATSS uses torch's (Bessel-corrected) std; one candidate has none
    threshold = candidate_iou.mean(dim=0) + candidate_iou.std(dim=0, unbiased=unbiased)
    chosen = (candidate_iou >= threshold) & centres_inside(centres, boxes).gather(0, candidates)
    positive = torch.zeros_like(overlaps, dtype=torch.bool)
    positive.scatter_(0, candidates, chosen)
    return Assignment(_claim(positive, overlaps))


@torch.no_grad()
def task_aligned(scores: torch.Tensor, predicted: torch.Tensor, centres: torch.Tensor, boxes: torch.Tensor,
                 labels: torch.Tensor, topk: int = TAL_TOPK, alpha: float = TAL_ALPHA,
                 beta: float = TAL_BETA) -> Assignment:
    """TOOD's assignment: ``scores`` [N, C] class probabilities and ``predicted`` [N, 4] boxes of the points
    ``centres`` [N, 2], for the ground-truth ``boxes`` [G, 4] of classes ``labels`` [G]."""
    count, num_boxes = len(centres), len(boxes)
    if num_boxes == 0 or count == 0:
        return Assignment(torch.full((count,), -1, dtype=torch.int64, device=centres.device),
                          scores.new_zeros(count))
    overlaps = box_iou(predicted, boxes)  # [N, G]
    metric = scores[:, labels] ** alpha * overlaps ** beta  # [N, G]
    candidates = _smallest(-metric, min(topk, count))  # [K, G]: the largest metrics
    chosen = (metric.gather(0, candidates) > 0) & centres_inside(centres, boxes).gather(0, candidates)
    positive = torch.zeros_like(overlaps, dtype=torch.bool)
    positive.scatter_(0, candidates, chosen)
    matched = _claim(positive, overlaps)
    return Assignment(matched, normalised_metric(metric, overlaps, matched))


def normalised_metric(metric: torch.Tensor, overlaps: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """Per point ``t / max t * max u`` over the positives of its box (TOOD's classification target), 0 for
    background. The 1e-7 in the denominator is TOOD's (``10e-8``)."""
    quality = metric.new_zeros(len(matched))
    points = torch.nonzero(matched >= 0).flatten()
    if len(points) == 0:
        return quality
    box = matched[points]
    t, u = metric[points, box], overlaps[points, box]
    num_boxes = metric.shape[1]
    max_t = t.new_zeros(num_boxes).scatter_reduce(0, box, t, reduce="amax", include_self=False)
    max_u = u.new_zeros(num_boxes).scatter_reduce(0, box, u, reduce="amax", include_self=False)
    quality[points] = t / (max_t[box] + 1e-7) * max_u[box]
    return quality
