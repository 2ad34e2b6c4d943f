"""`vito eval linear`: a linear ImageNet-style probe on a frozen encoder, with a learning-rate sweep.

Two protocols (docs/metrics.md, linear probe), recorded in the Result's settings:

* ``features`` (the fast path): the head is trained on cached centre-crop features, so the whole sweep costs
  one forward pass over the data;
* ``byol``: BYOL's protocol, a random-resized crop (area 8-100 %) and a horizontal flip of every training
  image in every epoch, through the frozen encoder; centre crop at test. All swept heads learn from the same
  augmented batches, so the sweep costs one forward pass per epoch.

The best head is saved as ``OUT/linear_head.pt`` for the ``--classifier`` option of other evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vito.data.augment import RandomResizedCropFlip
from vito.data.imagenet import normalize
from vito.engine.distributed import worker_count
from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.features import FeatureSet
from vito.eval.core.inputs import ImageFolder, collate_readable
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Metric, Result
from vito.eval.probes.head_sgd import MOMENTUM, new_head, train_heads
from vito.eval.probes.heads import LinearProbeSettings, evaluate_head, save_linear_head, train_linear_probe
from vito.eval.probes.knn import ImageFolderPair, feature_pair, image_coverage

BYOL_CROP_SCALE = (0.08, 1.0)


@dataclass
class LinearSettings(LinearProbeSettings, ImageFolderPair):
    """The images (``ImageFolderPair``'s fields first) and how the probe is trained (``LinearProbeSettings``)."""


class AugmentedView:
    """BYOL's training view of an image: random-resized crop (8-100 %) + flip, normalised (drawn per call)."""

    def __init__(self, size: int, seed: int) -> None:
        self.crop = RandomResizedCropFlip(size, scale=BYOL_CROP_SCALE)
        self.seed = seed
        self.rng: np.random.Generator | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng is None:  # one stream per process (DataLoader workers each get their own torch seed)
            self.rng = np.random.default_rng([self.seed, torch.initial_seed() % 2**32])
        return normalize(self.crop(image, self.rng))


def _split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit, held-out) indices: a random ``fraction`` held out when > 0, else all images fit."""
    if fraction <= 0:
        return list(range(count)), []
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, int(round(fraction * count)))
    if held >= count:
        raise VitoError("the held-out fraction leaves no training images")
    return order[held:], order[:held]


def train_heads_augmented(encoder: Encoder, dataset: ImageFolder, indices: Sequence[int], lrs: Sequence[float],
                          settings: LinearSettings) -> tuple[dict[float, nn.Linear], list[tuple[str, str]]]:
    """One head per base lr, trained together (``head_sgd.train_heads``) on the encoder's features of augmented
    views of ``dataset[indices]`` (BYOL protocol): one forward pass per batch for all heads."""
    device = next(encoder.parameters()).device
    num_classes, batch_size = len(dataset.classes), min(settings.probe_batch_size, len(indices))
    steps = settings.epochs * math.ceil(len(indices) / batch_size)
    generator = torch.Generator().manual_seed(settings.seed)
    heads = {lr: new_head(encoder.feature_dim, num_classes, torch.Generator().manual_seed(settings.seed)).to(device)
             for lr in lrs}
    skipped: dict[str, str] = {}

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in range(settings.epochs):
            loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=True,
                                num_workers=worker_count(settings.num_workers), collate_fn=collate_readable,
                                generator=generator)
            for images, labels, bad in progress(loader, desc=f"linear probe (byol) epoch {epoch + 1}", unit="batch",
                                                leave=False):
                skipped.update(dict(bad))
                if images is None:
                    continue
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16,
                                                     enabled=encoder.precision == "bf16"):
                    features = encoder.embed(images.to(device)).float()
                yield features, labels.to(device)

    trained = train_heads(heads, batches(), batch_size=batch_size, total_steps=steps)
    return {lr: head.cpu() for lr, head in trained.items()}, sorted(skipped.items())


def _rows_of(features: FeatureSet, paths: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop features and labels of the given (readable) training paths."""
    position = {p: i for i, p in enumerate(features.paths)}
    rows = torch.tensor([position[p] for p in paths if p in position], dtype=torch.long)
    return features.features[rows], features.labels[rows]


def byol_probe(encoder: Encoder, train: FeatureSet, val: FeatureSet, settings: LinearSettings):
    """The BYOL protocol; returns (best lr, sweep, where chosen, head, skipped training images)."""
    dataset = ImageFolder(settings.train, AugmentedView(settings.image_size, settings.seed))
    fit, held = _split(len(dataset), settings.holdout_fraction, settings.seed)
    heads, skipped = train_heads_augmented(encoder, dataset, fit, settings.lrs, settings)
    if held:
        selection, (sel_features, sel_labels) = "holdout", _rows_of(train, [dataset.paths[i] for i in held])
    else:
        selection, sel_features, sel_labels = "val", val.features, val.labels
    if len(sel_labels) == 0:
        raise DataError("no readable image to choose the learning rate on")
    sweep = {lr: evaluate_head(head, sel_features, sel_labels)["top1"] for lr, head in heads.items()}
    best = max(sweep, key=lambda lr: (sweep[lr], -lr))
    head = heads[best]
    if held:  # the chosen lr, trained again on the whole training set
        head = train_heads_augmented(encoder, dataset, range(len(dataset)), [best], settings)[0][best]
    return best, sweep, selection, head, skipped


@register
class Linear(Evaluation):
    name = "linear"
    Settings = LinearSettings
    group = "scene"
    headline = "top1"  # ImageNet top-1, Table B.3's IN-1K column
    help = "linear probe on a frozen encoder with a learning-rate sweep"
    description = ("SGD with Nesterov momentum 0.9, no weight decay, cosine decay; the base lr is swept and the best "
                   "head (on validation, or on a held-out part of train) is saved as OUT/linear_head.pt for "
                   "--classifier options of other evaluations. --protocol byol trains on random-resized crops and "
                   "flips (BYOL); the default trains on cached centre-crop features (fast).")

    def run(self, encoder: Encoder, settings: LinearSettings, out_dir: Path) -> Result:
        if not settings.lrs:
            raise VitoError("--lrs needs at least one learning rate")
        train, val = feature_pair(encoder, settings, out_dir)
        coverage, skipped = image_coverage(train, val)
        if settings.protocol == "byol":
            best, sweep, selection, head, more = byol_probe(encoder, train, val, settings)
            skipped += [item for item in more if item not in skipped]
        else:
            found = train_linear_probe(train.features, train.labels, val.features, val.labels, len(train.classes),
                                       settings)
            best, sweep, selection, head = found.best_lr, found.sweep, found.selection, found.head
        accuracy = evaluate_head(head, val.features, val.labels)
        out_dir = Path(out_dir)
        save_linear_head(out_dir / "linear_head.pt", head, {"classes": train.classes, "encoder": encoder.name,
                                                           "base_lr": best, "image_size": settings.image_size,
                                                           "protocol": settings.protocol})
        metrics = {name: Metric(value, "proportion", name.replace("top", "top-")) for name, value in accuracy.items()}
        metrics["best_lr"] = Metric(best, "value", "chosen base lr")
        return Result(self.name, metrics, {"lr_selected_on": selection, "momentum": MOMENTUM,
                                           "nesterov": True, "weight_decay": 0.0}, coverage,
                      tables={"lr sweep": [{"base_lr": lr, f"top1 ({selection})": acc} for lr, acc in sweep.items()]},
                      skipped=skipped, artifacts={"head": "linear_head.pt"})
