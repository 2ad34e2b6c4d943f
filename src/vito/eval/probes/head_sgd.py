"""The probes' one gradient loop: linear heads trained by SGD on features of a frozen encoder.

Both linear-probe protocols train through :func:`train_heads`: the fast path on cached centre-crop features
(``heads.fit_linear_head``) and BYOL's, on features of freshly augmented images (``linear.train_heads_augmented``),
where all swept heads learn from the same batches. Only heads learn here, so this loop needs none of the
fine-tune loop's machinery (checkpoints, resume, DDP): a probe takes seconds to minutes and is simply rerun.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

MOMENTUM = 0.9  # Nesterov momentum of the probe's SGD (BYOL appendix)


def new_head(dim: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """A linear head initialised N(0, 0.01) with zero bias, drawn from ``generator`` (the same head every run)."""
    head = nn.Linear(dim, num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=generator)
        head.bias.zero_()
    return head


def head_optimizer(head: nn.Linear, base_lr: float, batch_size: int, momentum: float,
                   total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum, no weight decay, ``lr = base_lr · batch / 256``, cosine decay to 0."""
    optimizer = torch.optim.SGD(head.parameters(), lr=base_lr * batch_size / 256, momentum=momentum, nesterov=True,
                                weight_decay=0.0)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def train_heads(heads: Mapping[float, nn.Linear], batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                batch_size: int, total_steps: int, momentum: float = MOMENTUM) -> dict[float, nn.Linear]:
    """Train every head (keyed by its base lr) on the same ``(features, labels)`` batches, one cross-entropy
    step each per batch, with :func:`head_optimizer`'s SGD and schedule over ``total_steps``; returned frozen,
    in eval mode."""
    optimizers = {lr: head_optimizer(head, lr, batch_size, momentum, total_steps) for lr, head in heads.items()}
    for features, labels in batches:
        for lr, head in heads.items():
            optimizer, schedule = optimizers[lr]
            loss = F.cross_entropy(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return {lr: head.eval().requires_grad_(False) for lr, head in heads.items()}
