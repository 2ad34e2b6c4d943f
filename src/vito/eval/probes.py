"""Classifiers on frozen features: weighted kNN (DINO) and the linear probe (BYOL protocol, VITO's sweep).

Both read cached features (``vito.eval.features``), so the learning-rate sweep costs seconds, not
forward passes. A trained linear head is saved as ``{"weight", "bias", "meta"}``; other evaluations
(human alignment, robustness) load it with ``load_linear_head`` and apply it to ``Encoder.embed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vito.errors import VitoError
from vito.io import atomic_write

LINEAR_LRS = (0.4, 0.3, 0.2, 0.1, 0.05)  # VITO's sweep (paper appendix), base lr for batch 256


# --------------------------------------------------------------------------------------------------
# Weighted kNN (spec §9.2)


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """``[N_test, C]`` class scores: the k most cosine-similar training points vote with ``exp(sim / T)``.

    Scores are normalised to sum to one per test point (the argmax is DINO's prediction).
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test.shape[0], chunk):
        similarity = test[start : start + chunk] @ train.T
        top_sim, top_idx = similarity.topk(k, dim=1)
        votes = torch.zeros(top_sim.shape[0], num_classes)
        # subtracting the row maximum leaves the normalised scores unchanged and avoids overflow
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
        votes.scatter_add_(1, train_labels[top_idx].long(), weights)
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores)


def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Predicted class per test point (spec §9.2, test vector 9a)."""
    return knn_scores(train_features, train_labels, test_features, num_classes, k, temperature).argmax(dim=1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies (fractions) for each k that does not exceed the number of classes."""
    result = {}
    for k in ks:
        if k <= scores.shape[1]:
            top = scores.topk(k, dim=1).indices
            result[f"top{k}"] = (top == labels[:, None]).any(dim=1).float().mean().item()
    return result


# --------------------------------------------------------------------------------------------------
# Linear probe (spec §9.1, §10 evaluation facts)


@dataclass
class LinearProbeSettings:
    lrs: Sequence[float] = LINEAR_LRS
    epochs: int = 80
    batch_size: int = 1024
    momentum: float = 0.9
    holdout_fraction: float = 0.0  # > 0: choose the lr on a held-out part of train, not on the test set
    seed: int = 0


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
    momentum: float = 0.9,
    seed: int = 0,
) -> nn.Linear:
    """SGD with Nesterov momentum, no weight decay, cosine decay to 0, ``lr = base_lr · batch / 256``."""
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=generator)
        head.bias.zero_()
    batch_size = min(batch_size, features.shape[0])
    steps_per_epoch = math.ceil(features.shape[0] / batch_size)
    lr = base_lr * batch_size / 256
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator)
        for start in range(0, features.shape[0], batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(head(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return head.eval().requires_grad_(False)


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
    for lr in tqdm(list(settings.lrs), desc="linear probe lr sweep", unit="lr"):
        head = fit_linear_head(*sel_train, num_classes, lr, settings.epochs, settings.batch_size,
                               settings.momentum, settings.seed)
        sweep[lr] = evaluate_head(head, *sel_eval)["top1"]
    best_lr = max(sweep, key=lambda lr: (sweep[lr], -lr))  # ties: the smaller lr
    head = fit_linear_head(train_features, train_labels, num_classes, best_lr, settings.epochs,
                           settings.batch_size, settings.momentum, settings.seed)
    return LinearProbeResult(
        best_lr=best_lr,
        sweep=sweep,
        selection=selection,
        val_metrics=evaluate_head(head, val_features, val_labels),
        head=head,
        settings={"lrs": list(settings.lrs), "epochs": settings.epochs, "batch_size": settings.batch_size,
                  "momentum": settings.momentum, "nesterov": True, "weight_decay": 0.0,
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight, bias = state["weight"], state["bias"]
    except Exception as error:  # unreadable file or wrong layout
        raise VitoError(f"{path} is not a linear head saved by vito (weight, bias, meta): {error}") from error
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    head.meta = state.get("meta", {})
    return head.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# `vito eval knn|linear`: features of two ImageFolders, one classifier, a JSON and a summary


def _feature_sets(encoder, train_dir, val_dir, out_dir, cache_dir, image_size, batch_size, num_workers):
    from vito.eval.features import cached_features

    cache = Path(cache_dir) if cache_dir is not None else Path(out_dir) / "features"
    train = cached_features(encoder, train_dir, cache, image_size, batch_size, num_workers)
    val = cached_features(encoder, val_dir, cache, image_size, batch_size, num_workers)
    if train.classes != val.classes:
        raise VitoError(f"{train_dir} and {val_dir} have different class folders")
    return train, val


def _data_counts(train, val) -> dict[str, Any]:
    """Image and class counts, and the unreadable files that were skipped (listed, so they can be fixed)."""
    return {"num_train": len(train.labels), "num_val": len(val.labels), "num_classes": len(train.classes),
            "skipped_images": {"train": train.skipped, "val": val.skipped}}


def _write_report(out_dir: str | Path, name: str, report: dict[str, Any], summary: str) -> None:
    from vito.io import write_json

    skipped = sum(len(paths) for paths in report["skipped_images"].values())
    if skipped:
        summary += f" ({skipped} unreadable images skipped, listed in {name}.json)"
    write_json(Path(out_dir) / f"{name}.json", report)
    with atomic_write(Path(out_dir) / f"{name}.md") as handle:
        handle.write(summary + "\n")


def run_knn(encoder, train_dir, val_dir, out_dir, k: int = 20, temperature: float = 0.07, image_size: int = 224,
            batch_size: int = 64, num_workers: int = 0, cache_dir=None) -> dict[str, Any]:
    """Weighted kNN accuracy of ``val_dir`` against ``train_dir``; writes ``OUT/knn.json`` and ``OUT/knn.md``."""
    train, val = _feature_sets(encoder, train_dir, val_dir, out_dir, cache_dir, image_size, batch_size, num_workers)
    scores = knn_scores(train.features, train.labels, val.features, len(train.classes), k, temperature)
    metrics = topk_accuracy(scores, val.labels)
    report = {"encoder": encoder.name, "train": str(train_dir), "val": str(val_dir), **metrics,
              "settings": {"k": k, "temperature": temperature, "image_size": image_size}, **_data_counts(train, val)}
    _write_report(out_dir, "knn", report, f"kNN (k={k}, T={temperature}) — {encoder.name}: "
                  f"top-1 {100 * metrics['top1']:.2f} % on {len(val.labels)} images, {len(train.classes)} classes")
    return report


def run_linear(encoder, train_dir, val_dir, out_dir, settings: LinearProbeSettings | None = None,
               image_size: int = 224, batch_size: int = 64, num_workers: int = 0, cache_dir=None) -> dict[str, Any]:
    """Linear probe with the lr sweep; writes ``OUT/linear.json``, ``OUT/linear.md`` and ``OUT/linear_head.pt``."""
    train, val = _feature_sets(encoder, train_dir, val_dir, out_dir, cache_dir, image_size, batch_size, num_workers)
    result = train_linear_probe(train.features, train.labels, val.features, val.labels, len(train.classes), settings)
    head_path = Path(out_dir) / "linear_head.pt"
    save_linear_head(head_path, result.head, {"classes": train.classes, "encoder": encoder.name,
                                              "base_lr": result.best_lr, "image_size": image_size})
    report = {"encoder": encoder.name, "train": str(train_dir), "val": str(val_dir), **result.val_metrics,
              "best_lr": result.best_lr, "sweep": {str(lr): acc for lr, acc in result.sweep.items()},
              "lr_selected_on": result.selection, "settings": result.settings, "head": str(head_path),
              **_data_counts(train, val)}
    _write_report(out_dir, "linear", report, f"Linear probe — {encoder.name}: top-1 {100 * report['top1']:.2f} % "
                  f"(base lr {result.best_lr}, chosen on {result.selection}); head saved to {head_path}")
    return report
