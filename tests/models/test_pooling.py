"""Attention pooling against spec test vector 10a, and the properties the rest of the code relies on."""

from __future__ import annotations

import math

import pytest
import torch

from vito.models.pooling import AttentionPool, AveragePool, MultiScalePool, weighted_sum


def test_spec_10a_weighted_sum() -> None:
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 3)  # 3 positions, C=2
    mask = torch.tensor([1.0, 2.0, 1.0]).log().softmax(0).view(1, 1, 3)
    assert torch.allclose(mask, torch.tensor([[[0.25, 0.5, 0.25]]]))
    assert torch.allclose(weighted_sum(features, mask), torch.tensor([[0.5, 0.75]]), atol=1e-7)


def test_spec_10a_through_the_module() -> None:
    """Logits log([1,2,1]) produced by the MLP itself (last layer's bias per position is impossible, so the
    hidden layer passes a feature through and the last layer reads it)."""
    pool = AttentionPool(channels=3, hidden=1)
    with torch.no_grad():
        first, _, last = pool.score
        first.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
        first.bias.zero_()
        last.weight.fill_(1.0)
        last.bias.zero_()
    # channels 0-1 are the spec's features, channel 2 carries the wanted logit.
    logits = torch.tensor([1.0, 2.0, 1.0]).log() + 5.0  # + constant: ReLU keeps them, softmax ignores it
    features = torch.tensor([[1.0, 0.0, logits[0]], [0.0, 1.0, logits[1]], [1.0, 1.0, logits[2]]]).T.reshape(1, 3, 1, 3)
    pooled, mask = pool(features)
    assert torch.allclose(mask, torch.tensor([[[0.25, 0.5, 0.25]]]), atol=1e-6)
    assert torch.allclose(pooled[0, :2], torch.tensor([0.5, 0.75]), atol=1e-6)


def test_masks_sum_to_one_and_have_map_shape() -> None:
    torch.manual_seed(0)
    pooled, mask = AttentionPool(8)(torch.randn(4, 8, 5, 7))
    assert pooled.shape == (4, 8) and mask.shape == (4, 5, 7)
    assert torch.allclose(mask.sum(dim=(1, 2)), torch.ones(4), atol=1e-6)
    assert (mask > 0).all()
    assert not torch.allclose(mask, torch.full_like(mask, 1 / 35))  # random MLP: not uniform


def test_constant_logits_give_exact_average_pooling() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(6, hidden=4)
    with torch.no_grad():
        pool.score[-1].weight.zero_()
    features = torch.randn(3, 6, 4, 4)
    pooled, mask = pool(features)
    average, uniform = AveragePool()(features)
    assert torch.allclose(pooled, average, atol=1e-6)
    assert torch.allclose(mask, uniform) and torch.allclose(mask, torch.full_like(mask, 1 / 16))


def test_softmax_in_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled, mask = pool(torch.randn(2, 8, 14, 14))
    assert mask.dtype == torch.float32
    assert torch.allclose(mask.sum(dim=(1, 2)), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_multiscale_concatenates_stages(attention: bool) -> None:
    pool = MultiScalePool([4, 6], attention=attention)
    maps = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    pooled, masks = pool(maps)
    assert pool.out_dim == 10 and pooled.shape == (2, 10)
    assert [tuple(m.shape) for m in masks] == [(2, 8, 8), (2, 4, 4)]
    first, _ = pool.pools[0](maps[0])
    assert torch.allclose(pooled[:, :4], first)
    assert math.isclose(float(masks[1].detach().sum()), 2.0, rel_tol=1e-5)


def _conv_reference(features: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring MLP as 1x1 convolutions (its former form), for the layout checks below."""
    hidden = torch.relu(torch.nn.functional.conv2d(features, state["score.0.weight"], state["score.0.bias"]))
    logits = torch.nn.functional.conv2d(hidden, state["score.2.weight"], state["score.2.bias"])
    mask = logits.flatten(1).softmax(dim=1).view(features.shape[0], *features.shape[2:])
    return (features * mask.unsqueeze(1)).sum(dim=(2, 3)), mask


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_same_pooling_for_either_memory_format_and_old_conv_checkpoints(memory_format: torch.memory_format) -> None:
    torch.manual_seed(0)
    conv_state = {"score.0.weight": torch.randn(5, 6, 1, 1), "score.0.bias": torch.randn(5),
                  "score.2.weight": torch.randn(1, 5, 1, 1), "score.2.bias": torch.randn(1)}
    pool = AttentionPool(6, hidden=5)
    pool.load_state_dict(conv_state)  # a checkpoint written while the MLP was 1x1 convolutions
    features = torch.randn(3, 6, 4, 5).contiguous(memory_format=memory_format)
    pooled, mask = pool(features)
    expected_pooled, expected_mask = _conv_reference(features, conv_state)
    assert torch.allclose(mask, expected_mask, atol=1e-6)
    assert torch.allclose(pooled, expected_pooled, atol=1e-5)
