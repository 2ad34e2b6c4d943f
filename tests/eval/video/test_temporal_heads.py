"""UCF-101's temporal integrations: average, multi-scale average and temporal attention (both forms), by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vito.eval.video.temporal_heads import TemporalAttention, TemporalPooling


def test_attention_spec_vector_8a_softmax_form() -> None:
    attention = TemporalAttention(2, form="softmax", hidden=2)
    with torch.no_grad():
        attention.proj.weight.copy_(torch.eye(2))
        attention.score.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert attention.weights(x)[0].tolist() == pytest.approx([0.593494, 0.129391, 0.277115], abs=1e-6)
    assert attention(x)[0].tolist() == pytest.approx([0.870609, 0.406506], abs=1e-6)


def test_attention_paper_tanh_form() -> None:
    attention = TemporalAttention(2, form="paper")
    with torch.no_grad():
        attention.proj.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    w = np.tanh([1.0, -1.0, 0.0])  # tanh(W z_t), no softmax
    assert attention(x)[0].tolist() == pytest.approx([w[0] + w[2], w[1] + w[2]], abs=1e-6)


def test_pooling_heads_by_hand() -> None:
    t = torch.arange(4, dtype=torch.float32)
    res4 = torch.stack([t, 10 * t], dim=1)[None]  # [1, T=4, C4=2]
    res5 = torch.stack([t, -t, 2 * t], dim=1)[None]  # [1, 4, C5=3]
    assert TemporalPooling("avg", 2, 3)([res4, res5])[0].tolist() == [1.5, -1.5, 3.0]
    ms = TemporalPooling("ms-avg", 2, 3)
    assert ms.out_dim == 7
    assert ms([res4, res5])[0].tolist() == [0.5, 5.0, 2.5, 25.0, 1.5, -1.5, 3.0]
    attn = TemporalPooling("ms-attn", 2, 3)
    with torch.no_grad():
        attn.attend4.proj.weight.copy_(torch.tensor([[1.0, 0.0]]))
        attn.attend5.proj.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
    out = attn([res4, res5])[0]
    w4 = np.tanh([0.0, 1.0, 2.0, 3.0])
    w5 = np.tanh(2 * np.arange(4.0))
    expected = [w4[1] * 1, w4[1] * 10, w4[2] * 2 + w4[3] * 3, 10 * (w4[2] * 2 + w4[3] * 3),
                (w5 * np.arange(4)).sum(), -(w5 * np.arange(4)).sum(), 2 * (w5 * np.arange(4)).sum()]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)
