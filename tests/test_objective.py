"""The multi-view InfoNCE objective against spec test vector 10b."""

from __future__ import annotations

import math

import pytest
import torch

from vito.errors import DataError
from vito.objective import identity_gather, info_nce, multiview_info_nce

Q1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # view-1 online
K1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # view-1 target
Q2 = torch.tensor([[0.8, 0.6], [0.6, -0.8]])  # view-2 online
K2 = torch.tensor([[0.6, 0.8], [0.8, -0.6]])  # view-2 target


def test_spec_10b_pairs() -> None:
    assert info_nce(Q1, K2, 0.1).item() == pytest.approx(8.063464, abs=1e-5)
    assert info_nce(Q2, K1, 0.1).item() == pytest.approx(7.063464, abs=1e-5)


def test_spec_10b_symmetric_sum() -> None:
    assert multiview_info_nce([Q1, Q2], [K1, K2], 0.1).item() == pytest.approx(15.126929, abs=1e-5)


def test_inputs_are_l2_normalised() -> None:
    assert info_nce(3 * Q1, 0.5 * K2, 0.1).item() == pytest.approx(8.063464, abs=1e-5)


def test_three_views_sum_six_ordered_pairs() -> None:
    torch.manual_seed(0)
    queries = [torch.randn(5, 8) for _ in range(3)]
    keys = [torch.randn(5, 8) for _ in range(3)]
    explicit = sum(info_nce(queries[i], keys[j], 0.1) for i in range(3) for j in range(3) if i != j)
    same_view = sum(info_nce(queries[i], keys[i], 0.1) for i in range(3))
    total = multiview_info_nce(queries, keys, 0.1)
    assert torch.allclose(total, explicit)
    assert not torch.allclose(total, explicit + same_view)  # the pairs i == j are not in it


def test_gather_with_offset_equals_single_process() -> None:
    """Two simulated ranks, each with half the clips: the mean of their losses is the global loss."""
    torch.manual_seed(0)
    queries = [torch.randn(6, 8) for _ in range(3)]
    keys = [torch.randn(6, 8) for _ in range(3)]
    single = multiview_info_nce(queries, keys, 0.1, identity_gather)
    all_keys = torch.cat(keys, dim=1)  # what a real gather would assemble from both ranks

    def gather_for(rank: int):
        def gather(local: torch.Tensor) -> tuple[torch.Tensor, int]:
            assert torch.equal(local, all_keys[3 * rank : 3 * rank + 3])  # this rank's rows, in place
            return all_keys, 3 * rank

        return gather

    per_rank = [
        multiview_info_nce([q[3 * r : 3 * r + 3] for q in queries], [k[3 * r : 3 * r + 3] for k in keys], 0.1,
                           gather_for(r))
        for r in range(2)
    ]
    assert torch.allclose((per_rank[0] + per_rank[1]) / 2, single, atol=1e-6)
    local_only = multiview_info_nce([q[:3] for q in queries], [k[:3] for k in keys], 0.1)
    assert not torch.allclose(per_rank[0], local_only)  # the other rank's clips are real negatives


def test_gradient_flows_to_queries_only() -> None:
    q = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    k = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    multiview_info_nce(q, k, 0.1).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in q)
    assert all(t.grad is None for t in k)


# Same-video keys are no negatives (spec §10: negatives are frames of *other videos* in the batch)

A = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]  # view-1 online, unit rows
B = [[0.8, 0.6], [1.0, 0.0], [0.6, -0.8]]  # view-2 target, unit rows


def _hand_info_nce(q: list[list[float]], k: list[list[float]], videos: list[int], t: float) -> float:
    """Mean of -log(exp(s_bb/t) / sum over g of the positive and the other videos' keys of exp(s_bg/t))."""
    total = 0.0
    for b, row in enumerate(q):
        s = [sum(x * y for x, y in zip(row, key)) / t for key in k]
        kept = [g for g in range(len(k)) if g == b or videos[g] != videos[b]]
        total += -s[b] + math.log(sum(math.exp(s[g]) for g in kept))
    return total / len(q)


def test_same_video_keys_leave_the_denominator_against_a_hand_computation() -> None:
    videos = [4, 4, 9]  # clips 0 and 1 come from the same video
    q, k = torch.tensor(A), torch.tensor(B)
    expected = _hand_info_nce(A, B, videos, 0.1) + _hand_info_nce(B, A, videos, 0.1)
    got = multiview_info_nce([q, k], [q, k], 0.1, video_index=torch.tensor(videos))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    unmasked = _hand_info_nce(A, B, [0, 1, 2], 0.1) + _hand_info_nce(B, A, [0, 1, 2], 0.1)
    assert multiview_info_nce([q, k], [q, k], 0.1).item() == pytest.approx(unmasked, abs=1e-5)
    assert abs(expected - unmasked) > 0.1  # the mask matters here


def test_spec_10b_unchanged_with_distinct_videos() -> None:
    got = multiview_info_nce([Q1, Q2], [K1, K2], 0.1, video_index=torch.tensor([7, 3]))
    assert got.item() == pytest.approx(15.126929, abs=1e-5)


def test_fewer_than_two_distinct_videos_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="fewer than 2 distinct videos"):
        multiview_info_nce([Q1, Q2], [K1, K2], 0.1, video_index=torch.tensor([5, 5]))


def test_mask_with_gather_equals_single_process() -> None:
    """Two simulated ranks; a video shared across the ranks must be masked on both."""
    torch.manual_seed(0)
    queries = [torch.randn(6, 8) for _ in range(3)]
    keys = [torch.randn(6, 8) for _ in range(3)]
    videos = torch.tensor([0, 1, 2, 1, 0, 3])
    single = multiview_info_nce(queries, keys, 0.1, video_index=videos)
    everything = {torch.int64: videos, torch.float32: torch.cat(keys, dim=1)}

    def gather_for(rank: int):
        def gather(local: torch.Tensor) -> tuple[torch.Tensor, int]:
            whole = everything[local.dtype]  # the video indices travel as their own int64 tensor
            assert torch.equal(local, whole[3 * rank : 3 * rank + 3])
            return whole, 3 * rank

        return gather

    per_rank = [
        multiview_info_nce([q[3 * r : 3 * r + 3] for q in queries], [k[3 * r : 3 * r + 3] for k in keys], 0.1,
                           gather_for(r), videos[3 * r : 3 * r + 3])
        for r in range(2)
    ]
    assert torch.allclose((per_rank[0] + per_rank[1]) / 2, single, atol=1e-6)
    assert not torch.allclose(single, multiview_info_nce(queries, keys, 0.1))


# loss.negatives: the paper's eq. 3 (cross_view) and DetCon's byol_nce set (cross_and_same_view), by hand.
# Three clips, three views, temperature 1. Every online prediction of clip b is e_b; the target keys of views 0 and
# 1 are e_b too, those of view 2 are shifted (clip b's key is e_{b+1 mod 3}), so a logit is 1 where the key
# points at the query's clip and 0 elsewhere, and a wrong choice of "same view" (the third view) changes the sum.
# Per query: -log(exp(positive) / sum of exp over the kept keys).
#   cross_view: pairs (i, j) with j in {0, 1}: positive 1, two negatives 0 -> log(e + 2) - 1 (4 pairs);
#   j = 2: positive 0, negatives 1 (clip b-1) and 0 -> log(e + 2) (2 pairs).        Sum: 6 log(e + 2) - 4.
#   cross_and_same_view adds the other clips' view-i keys: 0 + 0 for i in {0, 1}, 1 + 0 for i = 2:
#   (1,0), (0,1): log(e + 4) - 1; (2,0), (2,1): log(2e + 3) - 1; (0,2), (1,2): log(e + 4).
#                                                         Sum: 4 log(e + 4) + 2 log(2e + 3) - 4.
# With clips 0 and 1 from one video (each leaves the other's denominator in both sets):
#   cross_view: j in {0, 1}: clips 0, 1: log(e + 1) - 1, clip 2: log(e + 2) - 1; j = 2: clip 0: log(e + 1),
#   clip 1: log 2 (its logit-1 key is clip 0's, masked), clip 2: log(e + 2).
#                                       Sum: (10 log(e + 1) + 6 log(e + 2) + 2 log 2) / 3 - 4.
#   cross_and_same_view: (1,0), (0,1): [2 log(e + 2) + log(e + 4)] / 3 - 1; (2,0), (2,1): [log(2e + 1) +
#   log(e + 2) + log(2e + 3)] / 3 - 1; (0,2), (1,2): [log(e + 2) + log 3 + log(e + 4)] / 3.
#                     Sum: 2/3 [4 log(e + 2) + 2 log(e + 4) + log(2e + 1) + log(2e + 3) + log 3] - 4.

E = math.e
EYE = torch.eye(3)
QUERIES = [EYE, EYE, EYE]
KEYS = [EYE, EYE, EYE.roll(1, dims=1)]  # view 2: clip b's key is e_{b+1}


@pytest.mark.parametrize(("negatives", "videos", "expected"), [
    ("cross_view", None, 6 * math.log(E + 2) - 4),
    ("cross_and_same_view", None, 4 * math.log(E + 4) + 2 * math.log(2 * E + 3) - 4),
    ("cross_view", [7, 7, 9], (10 * math.log(E + 1) + 6 * math.log(E + 2) + 2 * math.log(2)) / 3 - 4),
    ("cross_and_same_view", [7, 7, 9], 2 / 3 * (4 * math.log(E + 2) + 2 * math.log(E + 4) + math.log(2 * E + 1)
                                                + math.log(2 * E + 3) + math.log(3)) - 4),
])
def test_negative_sets_against_a_hand_computation(negatives: str, videos: list[int] | None, expected: float) -> None:
    assert KEYS[2][0].tolist() == [0.0, 1.0, 0.0]  # clip 0's view-2 key points at clip 1
    video_index = None if videos is None else torch.tensor(videos)
    got = multiview_info_nce(QUERIES, KEYS, 1.0, video_index=video_index, negatives=negatives)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_same_view_negatives_with_gather_equal_a_single_process() -> None:
    torch.manual_seed(1)
    queries = [torch.randn(4, 8) for _ in range(3)]
    keys = [torch.randn(4, 8) for _ in range(3)]
    videos = torch.tensor([0, 1, 0, 2])
    single = multiview_info_nce(queries, keys, 0.1, video_index=videos, negatives="cross_and_same_view")
    everything = {torch.int64: videos, torch.float32: torch.cat(keys, dim=1)}

    def gather_for(rank: int):
        return lambda local: (everything[local.dtype], 2 * rank)

    per_rank = [multiview_info_nce([q[2 * r: 2 * r + 2] for q in queries], [k[2 * r: 2 * r + 2] for k in keys], 0.1,
                                   gather_for(r), videos[2 * r: 2 * r + 2], "cross_and_same_view") for r in range(2)]
    assert torch.allclose((per_rank[0] + per_rank[1]) / 2, single, atol=1e-6)
    assert not torch.allclose(single, multiview_info_nce(queries, keys, 0.1, video_index=videos))
    with pytest.raises(ValueError, match="negatives 'online'"):
        multiview_info_nce(queries, keys, 0.1, negatives="online")
