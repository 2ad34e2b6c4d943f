"""``vito eval imagenet-vid-robust``: pm-0 and pm-10 accuracy on ImageNet-Vid-Robust, 30 superclasses over
neighbouring video frames (docs/metrics.md, ImageNet-Vid-Robust)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vito.errors import DataError
from vito.eval.core.classifier import ImageNetClassifier, InferenceSettings, predict_logits
from vito.eval.core.registry import register
from vito.eval.robustness.shared import ClassifierOnSet, Scored
from vito.io import read_json

log = logging.getLogger(__name__)


class VidRobustMetadata:
    """The release's JSON files: frame labels, pm-k neighbour sets and the 30-superclass map."""

    FILES = ("labels.json", "pmsets.json", "rev_class_idx_map.json")

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        folder = root / "metadata" if (root / "metadata").is_dir() else root
        missing = [name for name in self.FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(f"{folder}: missing ImageNet-Vid-Robust metadata {', '.join(missing)}")
        self.labels: dict[str, list[int]] = _json_mapping(folder / "labels.json")
        self.pmsets: dict[str, list[str]] = _json_mapping(folder / "pmsets.json")
        reverse = _json_mapping(folder / "rev_class_idx_map.json")
        if set(reverse) != {str(k) for k in range(len(reverse))}:
            raise DataError(f"{folder / 'rev_class_idx_map.json'}: the superclass keys must be 0..N-1 without gaps")
        self.members: list[list[int]] = [reverse[str(k)] for k in range(len(reverse))]
        unlabelled = [f for a, n in self.pmsets.items() for f in [a, *n] if f not in self.labels]
        if unlabelled:
            raise DataError(f"{folder / 'labels.json'} has no label for {len(unlabelled)} frames of pmsets.json "
                            f"(e.g. {unlabelled[:3]})")
        self.image_root = root / "frames" if (root / "frames").is_dir() else root


def _json_mapping(path: Path) -> dict[str, Any]:
    """A metadata file that must be a JSON object; anything else (truncated, non-UTF-8, a list) is a DataError."""
    data = read_json(path, "ImageNet-Vid-Robust metadata")
    if not isinstance(data, dict):
        raise DataError(f"ImageNet-Vid-Robust metadata {path} is not a JSON object (got {type(data).__name__})")
    return data


def superclass_predictions(logits: torch.Tensor, members: Sequence[Sequence[int]]) -> torch.Tensor:
    """Argmax over superclasses scored by the *max* of their member ImageNet logits."""
    scores = torch.stack([logits[:, list(m)].max(dim=-1).values for m in members], dim=-1)
    return scores.argmax(dim=-1)


def pm_k_accuracy(
    predictions: Mapping[str, int], labels: Mapping[str, Sequence[int]], pmsets: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """pm0: anchor correct; pm-k: anchor *and* every frame of its pm-k set correct (an empty set is fine)."""

    def correct(frame: str) -> bool:
        return predictions[frame] in labels[frame]

    anchors = list(pmsets)
    pm0 = [correct(a) for a in anchors]
    pmk = [correct(a) and all(correct(n) for n in pmsets[a]) for a in anchors]
    return {"pm0": float(np.mean(pm0)), "pm10": float(np.mean(pmk)), "anchors": len(anchors)}


def evaluate_vid_robust(classifier: ImageNetClassifier, root: str | Path, **predict_kwargs) -> Scored:
    """pm0 and pm10 (fractions) on the release layout (``metadata/*.json`` + frames named as in the JSON keys).

    Anchors whose frames are not all on disk (or not all readable) are left out and the coverage says so.
    """
    meta = VidRobustMetadata(root)
    complete = {a: n for a, n in meta.pmsets.items() if all((meta.image_root / f).is_file() for f in [a, *n])}
    if not complete:
        raise DataError(f"{meta.image_root}: no anchor has all of its frames on disk")
    frames = sorted({f for a, n in complete.items() for f in [a, *n]})
    found = predict_logits(classifier, [meta.image_root / f for f in frames], desc="vid-robust", **predict_kwargs)
    predicted = dict(zip([frames[i] for i in found.kept], superclass_predictions(found.logits, meta.members).tolist()))
    readable = {a: n for a, n in complete.items() if all(f in predicted for f in [a, *n])}
    if not readable:
        raise DataError(f"{meta.image_root}: no anchor has all of its frames readable")
    scores = pm_k_accuracy(predicted, meta.labels, readable)
    missing = len(meta.pmsets) - len(readable)
    if missing:
        log.warning("ImageNet-Vid-Robust: %d of %d anchors left out (frames missing or unreadable under %s)",
                    missing, len(meta.pmsets), meta.image_root)
    return Scored({"pm0": scores["pm0"], "pm10": scores["pm10"]}, len(readable), len(meta.pmsets),
                  f"anchors with all their frames ({len(frames)} frames)", found.skipped)


@dataclass
class VidRobustSettings(InferenceSettings):
    root: Path = field(default=None, metadata={
        "help": "ImageNet-Vid-Robust folder (metadata/*.json and the frames named in it)", "cli": {"required": True}})


@register
class ImageNetVidRobust(ClassifierOnSet):
    name = "imagenet-vid-robust"
    Settings = VidRobustSettings
    help = "pm-0 and pm-10 accuracy on ImageNet-Vid-Robust (30 superclasses, neighbouring video frames)"
    labels = {"pm0": "pm-0 top-1", "pm10": "pm-10 top-1"}
    headline = "pm10"  # the paper's point: the gap grows at the largest temporal displacement (§4.1)
    score = staticmethod(evaluate_vid_robust)
