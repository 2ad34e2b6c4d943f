"""FCOS*'s assignments on a few points and boxes, against hand-computed answers.

The points: level 0 with stride 2 on a 4x4 grid (centres x, y in {0, 2, 4, 6}; point index 4 * row + column),
level 1 with stride 4 on a 2x2 grid (centres in {0, 4}; indices 16..19). ATSS is run with 2 candidates per level
and anchors of 2 strides (side 4 on level 0, 8 on level 1) so that every IoU below is a fraction one can check.
"""

from __future__ import annotations

import pytest
import torch

from vito.eval.dense.detection import assign


def _points() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    levels = []
    for stride, side in ((2, 4), (4, 2)):
        ys, xs = torch.meshgrid(torch.arange(side) * stride, torch.arange(side) * stride, indexing="ij")
        levels.append(torch.stack([xs.flatten(), ys.flatten()], dim=1))
    centres = torch.cat(levels).double()
    strides = torch.tensor([2.0] * 16 + [4.0] * 4, dtype=torch.float64)
    return centres, strides, [16, 4]


def _atss(box: list[float]) -> dict[int, int]:
    centres, strides, sizes = _points()
    found = assign.atss(centres, strides, sizes, torch.tensor([box], dtype=torch.float64), topk=2, anchor_scale=2)
    return {int(i): int(found.matched[i]) for i in torch.nonzero(found.matched >= 0).flatten()}


def test_atss_threshold_is_mean_plus_std_of_the_nearest_per_level() -> None:
    """Box (1, 1, 6, 6.5), centre (3.5, 3.75), area 27.5. Nearest 2 per level: level 0 (4, 4) and (2, 4),
    level 1 (4, 4) and (0, 4). Anchor IoUs: [2,2,6,6] 16/27.5; [0,2,4,6] 12/31.5; [0,0,8,8] 27.5/64;
    [-4,0,4,8] 16.5/75. Mean 0.40311, sample std 0.14907: threshold 0.55218, reached by level 0's (4, 4) only
    (a threshold at the mean alone would also take level 1's (4, 4), IoU 0.4297)."""
    ious = torch.tensor([16 / 27.5, 12 / 31.5, 27.5 / 64, 16.5 / 75], dtype=torch.float64)
    assert float(ious.mean() + ious.std()) == pytest.approx(0.55218, abs=1e-5)
    assert _atss([1, 1, 6, 6.5]) == {10: 0}  # level 0, row 2, column 2: the point (4, 4)


def test_atss_positives_lie_inside_the_box() -> None:
    """Box (3, 6, 6.5, 7): candidates level 0 (4, 6), (6, 6) and level 1 (4, 4), (0, 4), IoUs 3/16.5, 2.5/17,
    3.5/64, 1/66.5, threshold 0.17750. (4, 6) reaches it (0.1818) but lies on the box's top edge, not inside:
    the box gets no positive. Moved up by 0.1 (3, 5.9, 6.5, 6.9) the candidates and IoUs are the same and (4, 6)
    lies inside: it is the positive."""
    ious = torch.tensor([3 / 16.5, 2.5 / 17, 3.5 / 64, 1 / 66.5], dtype=torch.float64)
    assert float(ious.mean() + ious.std()) == pytest.approx(0.17750, abs=1e-5)
    assert _atss([3, 6, 6.5, 7]) == {}
    assert _atss([3, 5.9, 6.5, 6.9]) == {14: 0}  # level 0, row 3, column 2: the point (4, 6)


def test_atss_without_boxes_is_all_background() -> None:
    centres, strides, sizes = _points()
    found = assign.atss(centres, strides, sizes, torch.zeros(0, 4, dtype=torch.float64))
    assert (found.matched == -1).all() and len(found.matched) == 20


# --------------------------------------------------------------------------------------------------
# Task alignment: five points, one class; the box (0, 0, 10, 10)

CENTRES = torch.tensor([[5, 5], [2, 2], [8, 8], [5, 2], [12, 5]], dtype=torch.float64)  # E (12, 5) lies outside
PREDICTED = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 5, 5], [0, 0, 10, 8], [0, 0, 10, 10]],
                         dtype=torch.float64)
SCORES = torch.tensor([[0.5], [0.8], [0.9], [0.2], [0.9]], dtype=torch.float64)


def test_alignment_metric_and_top_m() -> None:
    """t = s * u**6: A 0.5 * 1 = 0.5, B 0.8 * 0.5**6 = 0.0125, C 0.9 * 0.25**6 = 0.00022, D 0.2 * 0.8**6 =
    0.0524288, E 0.9 * 1 = 0.9. The top 3 are E, A, D; E lies outside the box, so A and D are the positives
    (B, fourth, does not take E's place). Targets t / max t * max u: A 0.5 / 0.5 * 1 = 1, D 0.0524288 / 0.5 =
    0.1048576."""
    found = assign.task_aligned(SCORES, PREDICTED, CENTRES, torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64),
                                torch.tensor([0]), topk=3, alpha=1, beta=6)
    assert found.matched.tolist() == [0, -1, -1, 0, -1]
    assert found.quality.tolist() == pytest.approx([1.0, 0, 0, 0.1048576, 0], abs=1e-6)


def test_alignment_claims_go_to_the_box_the_prediction_overlaps_most() -> None:
    """A second box (0, 0, 10, 8): t = A 0.5 * 0.8**6 = 0.131, B 0.8 * 0.625**6 = 0.048, D 0.2 * 1 = 0.2,
    E 0.9 * 0.8**6 = 0.236 (outside): its positives are D and A. A predicts the first box exactly (u 1 against
    0.8), D the second: each goes to the box its prediction overlaps most, and each is its box's best, target 1."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8]], dtype=torch.float64)
    found = assign.task_aligned(SCORES, PREDICTED, CENTRES, boxes, torch.tensor([0, 0]), topk=3, alpha=1, beta=6)
    assert found.matched.tolist() == [0, -1, -1, 1, -1]
    assert found.quality.tolist() == pytest.approx([1.0, 0, 0, 1.0, 0], abs=1e-6)


def test_published_defaults() -> None:
    assert (assign.ATSS_TOPK, assign.ANCHOR_SCALE, assign.TAL_TOPK, assign.TAL_ALPHA, assign.TAL_BETA) == (
        9, 8, 13, 1.0, 6.0)
