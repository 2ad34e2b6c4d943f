"""Optimiser and schedules of BYOL/MoCLR (docs/pretraining.md): LARS, warm-up + cosine learning rate, cosine EMA decay.

LARS scales each layer's update so that its size is a fixed fraction (the trust coefficient) of the
layer's weight norm; this is what lets these methods train with batches of thousands. Biases and
normalisation parameters are excluded from both weight decay and this adaptation, as in BYOL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vito.config import IMAGENET_EPOCH, OptimConfig


class LARS(torch.optim.Optimizer):
    """BYOL's LARS: ``g = grad + wd * p``; ``g *= eta * |p| / |g|``; ``m = momentum * m + g``; ``p -= lr * m``.

    Parameter groups with ``exclude=True`` skip both the weight decay and the trust ratio (plain SGD with
    momentum). The trust ratio falls back to 1 when either norm is zero.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(params, group)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        """One group at once with ``torch._foreach`` ops (a few kernels instead of a Python loop of many)."""
        updates = [p.grad for p in params]
        if not group["exclude"]:
            updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])
            torch._foreach_mul_(updates, trust_ratios(params, updates, group["trust_coefficient"]))
        momenta = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in params]
        torch._foreach_mul_(momenta, group["momentum"])
        torch._foreach_add_(momenta, updates)
        torch._foreach_add_(params, momenta, alpha=-group["lr"])


def trust_ratios(params: list[torch.Tensor], updates: list[torch.Tensor], eta: float) -> list[torch.Tensor]:
    """``eta * |p| / |update|`` per tensor, or 1 where either norm is zero."""
    param_norms = torch.stack(torch._foreach_norm(params))
    update_norms = torch.stack(torch._foreach_norm(updates))
    ratios = torch.where((param_norms > 0) & (update_norms > 0), eta * param_norms / update_norms, 1.0)
    return list(ratios.unbind())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into LARS groups: weights, and 1-d ones (biases, norms) with ``exclude=True``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "exclude": True},
    ]


def warmup_length(optim: OptimConfig, batch_size: int) -> int:
    """The warm-up in steps: ``optim.warmup_steps`` when given, else ``warmup_epochs`` epochs of
    ``IMAGENET_EPOCH`` clips at ``batch_size`` clips a step, rounded down as BYOL does (10 epochs at 4096: 3127)."""
    if optim.warmup_steps is not None:
        return optim.warmup_steps
    return int(optim.warmup_epochs * IMAGENET_EPOCH // batch_size)


def learning_rate(step: int, base_lr: float, batch_size: int, warmup_steps: int, total_steps: int) -> float:
    """``base_lr * batch_size / 256``, linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0."""
    peak = base_lr * batch_size / 256
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def ema_tau(step: int, total_steps: int, base: float) -> float:
    """BYOL's target decay ``1 - (1 - base)(cos(pi k / K) + 1) / 2``: ``base`` at step 0, 1 at the last step."""
    progress = min(step, total_steps) / total_steps
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
