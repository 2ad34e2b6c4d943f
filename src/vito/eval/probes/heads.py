"""Classifiers on frozen features: weighted kNN (DINO) and the linear probe (BYOL protocol, VITO's sweep).

Both read cached features (``vito.eval.core.features``), so the learning-rate sweep costs seconds, not
forward passes. A trained linear head is saved as ``{"weight", "bias", "meta"}``; other evaluations
(human alignment, robustness) load it with ``load_linear_head`` and apply it to ``Encoder.embed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vito.engine.progress import progress
from vito.errors import VitoError
from vito.eval.probes.head_sgd import MOMENTUM, new_head, train_heads
from vito.io import atomic_write
from vito.tensor_files import load_tensor_file

LINEAR_LRS = (0.4, 0.3, 0.2, 0.1, 0.05)  # VITO's sweep (paper appendix), base lr for batch 256


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies (fractions) for each k that does not exceed the number of classes."""
    result = {}
    for k in ks:
        if k <= scores.shape[1]:
            top = scores.topk(k, dim=1).indices
            result[f"top{k}"] = (top == labels[:, None]).any(dim=1).float().mean().item()
    return result


# --------------------------------------------------------------------------------------------------
# Linear probe (docs/metrics.md, linear probe)


@dataclass
class LinearProbeSettings:
    """How a linear probe is trained; ``vito eval linear``'s Settings are these plus how to read the images."""

    lrs: tuple[float, ...] = field(default=LINEAR_LRS, metadata={"help": "base lrs (batch 256)"})
    epochs: int = field(default=80, metadata={"help": "epochs of the probe's SGD"})
    probe_batch_size: int = field(default=1024, metadata={"help": "batch size of the probe's SGD"})
    holdout_fraction: float = field(default=0.0, metadata={
        "help": "choose the lr on this fraction of train instead of on --val (BYOL: 10k images)"})
    protocol: Literal["features", "byol"] = field(default="features", metadata={
        "help": "features: heads on cached centre-crop features (fast); byol: random-resized crop + flip of "
        "every training image each epoch, centre crop at test"})
    seed: int = field(default=0, metadata={"help": "initialisation, shuffling and crops"})


@dataclass
class LinearProbeResult:
    best_lr: float
    sweep: dict[float, float]  # base lr -> selection accuracy
    selection: str  # where the lr was chosen: "holdout" or "val"
    val_metrics: dict[str, float]
    head: nn.Linear
    settings: dict[str, Any] = field(default_factory=dict)


def fit_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    base_lr: float,
    epochs: int = 80,
    batch_size: int = 1024,
    momentum: float = MOMENTUM,
    seed: int = 0,
) -> nn.Linear:
    """Train a head on fixed features (the fast path): ``head_sgd.train_heads``, reshuffled every epoch."""
    generator = torch.Generator().manual_seed(seed)
    head = new_head(features.shape[1], num_classes, generator)
    batch_size = min(batch_size, features.shape[0])

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(epochs):
            order = torch.randperm(features.shape[0], generator=generator)
            for start in range(0, features.shape[0], batch_size):
                index = order[start : start + batch_size]
                yield features[index], labels[index]

    steps = epochs * math.ceil(features.shape[0] / batch_size)
    return train_heads({base_lr: head}, batches(), batch_size=batch_size, total_steps=steps, momentum=momentum)[base_lr]


@torch.no_grad()
def evaluate_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return topk_accuracy(head(features.float()).softmax(dim=1), labels)


def train_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    settings: LinearProbeSettings | None = None,
) -> LinearProbeResult:
    """Sweep the base lr, pick the best, and train the final head on the whole training set.

    With ``holdout_fraction > 0`` the lr is chosen on a random held-out part of the training set (BYOL);
    otherwise on the validation set (as the paper states: "best picked on validation").
    """
    settings = settings or LinearProbeSettings()
    train_features, val_features = train_features.float(), val_features.float()
    if settings.holdout_fraction > 0:
        order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(settings.seed))
        n_hold = max(1, int(round(settings.holdout_fraction * len(order))))
        hold, fit = order[:n_hold], order[n_hold:]
        if len(fit) == 0:
            raise VitoError("the held-out fraction leaves no training images")
        sel_train = (train_features[fit], train_labels[fit])
        sel_eval = (train_features[hold], train_labels[hold])
        selection = "holdout"
    else:
        sel_train, sel_eval, selection = (train_features, train_labels), (val_features, val_labels), "val"
    sweep = {}
    for lr in progress(list(settings.lrs), desc="linear probe lr sweep", unit="lr"):
        head = fit_linear_head(*sel_train, num_classes, lr, settings.epochs, settings.probe_batch_size,
                               seed=settings.seed)
        sweep[lr] = evaluate_head(head, *sel_eval)["top1"]
    best_lr = max(sweep, key=lambda lr: (sweep[lr], -lr))  # ties: the smaller lr
    head = fit_linear_head(train_features, train_labels, num_classes, best_lr, settings.epochs,
                           settings.probe_batch_size, seed=settings.seed)
    return LinearProbeResult(
        best_lr=best_lr,
        sweep=sweep,
        selection=selection,
        val_metrics=evaluate_head(head, val_features, val_labels),
        head=head,
        settings={"lrs": list(settings.lrs), "epochs": settings.epochs, "batch_size": settings.probe_batch_size,
                  "momentum": MOMENTUM, "nesterov": True, "weight_decay": 0.0,
                  "holdout_fraction": settings.holdout_fraction, "seed": settings.seed},
    )


# --------------------------------------------------------------------------------------------------
# Saving and loading heads


def save_linear_head(path: str | Path, head: nn.Linear, meta: dict[str, Any] | None = None) -> None:
    """Write ``{"weight", "bias", "meta"}`` atomically (``meta``: classes, encoder, lr... plain values)."""
    state = {"weight": head.weight.detach().cpu().clone(), "bias": head.bias.detach().cpu().clone(),
             "meta": dict(meta or {})}
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_linear_head(path: str | Path) -> nn.Linear:
    """The saved head as an ``nn.Linear`` in eval mode; its ``meta`` dict is attached as ``head.meta``."""
    path = Path(path)
    if not path.is_file():
        raise VitoError(f"linear head not found: {path}")
    state = load_tensor_file(path, "linear head saved by vito")
    try:
        weight, bias = state["weight"], state["bias"]
    except (KeyError, TypeError, IndexError) as error:  # another file of tensors
        raise VitoError(f"{path} is not a linear head saved by vito (weight, bias, meta): {error}") from error
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    head.meta = state.get("meta", {})
    return head.eval().requires_grad_(False)
