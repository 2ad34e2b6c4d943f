"""LARS against a hand computation, and the learning-rate and EMA schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vito.pretrain.optim import LARS, ema_tau, learning_rate, param_groups


def test_param_groups_exclude_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Conv2d(3, 2, 1))
    model[2].requires_grad_(False)
    decayed, excluded = param_groups(model, weight_decay=0.5)
    assert decayed["params"] == [model[0].weight] and decayed["weight_decay"] == 0.5
    assert excluded["params"] == [model[0].bias, model[1].weight, model[1].bias]
    assert excluded["exclude"] and excluded["weight_decay"] == 0.0


def test_lars_step_matches_hand_computation() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    bias = nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.6, -0.8]])
    bias.grad = torch.tensor([2.0])
    groups = [{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.1, "exclude": True}]
    optimizer = LARS(groups, lr=0.5, momentum=0.9, trust_coefficient=0.01)
    for _ in range(2):  # the second step exercises the momentum buffer
        optimizer.step()
    # step 1 weight: g = [0.6, -0.8] + 0.1 * [3, 4] = [0.9, -0.4]; ratio = 0.01 * 5 / |g|
    g1 = torch.tensor([[0.9, -0.4]])
    u1 = g1 * (0.01 * 5 / g1.norm())
    w1 = torch.tensor([[3.0, 4.0]]) - 0.5 * u1
    g2 = torch.tensor([[0.6, -0.8]]) + 0.1 * w1
    u2 = g2 * (0.01 * w1.norm() / g2.norm())
    w2 = w1 - 0.5 * (0.9 * u1 + u2)
    assert torch.allclose(weight.detach(), w2, atol=1e-6)
    # bias (excluded): plain momentum SGD, no decay, no trust ratio: 1 - 0.5*2 - 0.5*(0.9*2 + 2)
    assert bias.item() == pytest.approx(1 - 1.0 - 1.9)


def test_lars_trust_ratio_is_one_for_zero_weights() -> None:
    weight = nn.Parameter(torch.zeros(2, 2))
    weight.grad = torch.ones(2, 2)
    LARS([weight], lr=0.1, momentum=0.9, weight_decay=0.0).step()
    assert torch.allclose(weight.detach(), torch.full((2, 2), -0.1))


def test_learning_rate_warmup_then_cosine() -> None:
    kwargs = dict(base_lr=0.3, batch_size=512, warmup_steps=10, total_steps=110)
    assert learning_rate(0, **kwargs) == 0.0
    assert learning_rate(5, **kwargs) == pytest.approx(0.3)  # half of the peak 0.6
    assert learning_rate(10, **kwargs) == pytest.approx(0.6)
    assert learning_rate(60, **kwargs) == pytest.approx(0.3)  # half-way down the cosine
    assert learning_rate(35, **kwargs) == pytest.approx(0.6 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(110, **kwargs) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(200, **kwargs) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(3, 0.3, 256, warmup_steps=0, total_steps=1) == pytest.approx(0.0, abs=1e-12)


def test_ema_tau_schedule() -> None:
    assert ema_tau(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_tau(50, 100, 0.996) == pytest.approx(0.998)
    assert ema_tau(100, 100, 0.996) == pytest.approx(1.0)
    assert ema_tau(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)


def test_a_warm_up_as_long_as_the_run_is_reported() -> None:
    from vito.config import load_config
    from vito.pretrain.loop import _warmup_notes

    short = load_config(None, ["train.max_steps=1000", "data.batch_size=64"])  # 10 epochs: 12,811,670 // 64 steps
    assert "warm-up (200182 steps) is not shorter than the run (1000 steps)" in _warmup_notes(short)[0]
    assert _warmup_notes(load_config("vito_r50")) == []  # 3127 of 93835 steps
