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
