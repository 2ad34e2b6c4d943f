"""``vito eval imagenet-a``: top-1 on ImageNet-A, natural adversarial images of 200 of the 1000 classes
(docs/metrics.md, ImageNet-A)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vito.eval.core.classifier import ImageNetClassifier, InferenceSettings, predict_logits, timm_info
from vito.eval.core.registry import register
from vito.eval.robustness.shared import ClassifierOnSet, Scored, labelled_folder


def imagenet_a_classes() -> tuple[list[int], list[str]]:
    """ImageNet-1k indices and wnids of the 200 ImageNet-A classes, from timm's package data."""
    return [int(i) for i in timm_info("imagenet_a_indices.txt")], timm_info("imagenet_a_synsets.txt")


def imagenet_a_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the 200 ImageNet-A classes only: positions 0..199 (no renormalisation needed)."""
    indices, _ = imagenet_a_classes()
    return logits[:, indices].argmax(dim=-1)


def evaluate_imagenet_a(classifier: ImageNetClassifier, root: str | Path, **predict_kwargs) -> Scored:
    """Top-1 (a fraction) on the official ImageNet-A release (``imagenet-a/<wnid>/*.jpg``)."""
    _, wnids = imagenet_a_classes()
    paths, targets = labelled_folder(Path(root), wnids)
    found = predict_logits(classifier, paths, desc="imagenet-a", **predict_kwargs)
    correct = imagenet_a_predictions(found.logits) == torch.tensor(targets)[found.kept]
    return Scored({"top1": correct.float().mean().item()}, len(found.kept), len(paths), "images", found.skipped)


@dataclass
class ImageNetASettings(InferenceSettings):
    root: Path = field(default=None, metadata={"help": "ImageNet-A release folder (imagenet-a/<wnid>/*.jpg)",
                                               "cli": {"required": True}})


@register
class ImageNetA(ClassifierOnSet):
    name = "imagenet-a"
    Settings = ImageNetASettings
    help = "top-1 on ImageNet-A (natural adversarial images, 200 classes)"
    labels = {"top1": "top-1"}
    headline = "top1"  # top-1 over the 200 classes, Table 1's IN-A column
    score = staticmethod(evaluate_imagenet_a)
