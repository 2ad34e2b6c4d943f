"""What the three robustness evaluations share (paper §4.1, A.7): a frozen ImageNet classifier scored on
labelled image folders, the ``Scored`` record of one benchmark, the Result made from it, and the evaluation
class of the two sets that only need ``--root``.

ImageNet-A, ImageNet-Vid-Robust and ImageNet-3DCC all reuse one frozen ImageNet classifier (encoder + linear
probe, or a model's own head) and only differ in how its 1000 logits are read: ImageNet-A keeps 200 of them,
Vid-Robust pools them into 30 superclasses and asks for stability over neighbouring video frames, 3DCC measures
the drop from clean to corrupted accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from vito.errors import DataError, VitoError
from vito.eval.core.classifier import (
    ImageNetClassifier,
    InferenceSettings,
    Logits,
    attach_head,
    imagenet_synsets,
    predict_logits,
)
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import list_images
from vito.eval.core.registry import Evaluation
from vito.eval.core.result import Coverage, Metric, Result


def labelled_folder(root: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    """``root/<wnid>/<image>`` files and their class positions in ``wnids``; other folders are an error."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    position = {wnid: i for i, wnid in enumerate(wnids)}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: expected one sub-folder per class (named by wnid)")
    unknown = [f.name for f in folders if f.name not in position]
    if unknown:
        raise DataError(f"{root}: folders {unknown[:5]} are not among the expected {len(wnids)} wnids")
    paths, targets = [], []
    for folder in folders:
        files = list_images(folder)
        paths += files
        targets += [position[folder.name]] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found")
    return paths, targets


@dataclass
class Scored:
    """Metrics (fractions) of one robustness benchmark, with what was used, what was expected and what skipped."""

    metrics: dict[str, float]
    used: int
    expected: int
    note: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def folder_accuracy(
    classifier: ImageNetClassifier, folder: Path, desc: str, **predict_kwargs
) -> tuple[float, Logits, int]:
    """Top-1 (fraction) on an ImageNet-style ``<wnid>/<image>`` folder, the logits, and the listed image count."""
    paths, targets = labelled_folder(folder, imagenet_synsets())
    found = predict_logits(classifier, paths, desc=desc, **predict_kwargs)
    accuracy = (found.logits.argmax(dim=-1) == torch.tensor(targets)[found.kept]).float().mean().item()
    return accuracy, found, len(paths)


def scored_result(name: str, scored: Scored, kinds: Mapping[str, str], labels: Mapping[str, str]) -> Result:
    """A benchmark's Result: each metric a proportion unless ``kinds`` says otherwise, named by ``labels``."""
    metrics = {key: Metric(value, kinds.get(key, "proportion"), labels.get(key, key))
               for key, value in scored.metrics.items()}
    return Result(name, metrics, {}, Coverage(scored.used, scored.expected, scored.note), skipped=scored.skipped)


class ClassifierOnSet(Evaluation):
    """An evaluation that scores a frozen ImageNet classifier on the set under a required ``--root``.

    ImageNet-A and ImageNet-Vid-Robust differ only in how they score (``score``: classifier, root and the
    inference options -> ``Scored``) and in their metric labels.
    """

    uses_classifier = True
    group = "ood"
    labels: ClassVar[Mapping[str, str]] = {}

    def score(self, classifier: ImageNetClassifier, root: Path, **predict_kwargs) -> Scored:
        raise NotImplementedError

    def check(self, settings: InferenceSettings, has_encoder: bool) -> None:
        super().check(settings, has_encoder)
        if getattr(settings, "root", None) is None:
            raise VitoError(f"vito eval {self.name} needs --root DIR")

    def run(self, encoder: Encoder, settings: InferenceSettings, out_dir: Path) -> Result:
        model = attach_head(encoder, settings.classifier)
        return scored_result(self.name, self.score(model, settings.root, **settings.predict_kwargs()), {}, self.labels)
