"""Robustness to natural and synthetic shifts: ImageNet-A, ImageNet-Vid-Robust, ImageNet-3DCC (paper §4.1, A.7).

All three reuse one frozen ImageNet classifier (encoder + linear probe, or a model's own head) and only differ
in how its 1000 logits are read: ImageNet-A keeps 200 of them, Vid-Robust pools them into 30 superclasses and
asks for stability over neighbouring video frames, 3DCC measures the drop from clean to corrupted accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vito.errors import DataError, VitoError
from vito.eval.core.base import Coverage, Evaluation, Metric, Result, read_result, register
from vito.eval.core.classifier import (
    ImageNetClassifier,
    InferenceSettings,
    Logits,
    attach_head,
    imagenet_synsets,
    predict_logits,
    timm_info,
)
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import list_images
from vito.eval.robustness.pictures import plot_delta_accuracy
from vito.io import read_json

log = logging.getLogger(__name__)

# ImageNet-3DCC corruptions the paper uses (A.7). "view_jitter" is not an ImageNet-3DCC name in any release we
# know of; it is evaluated when a folder of that name exists and reported as missing otherwise.
PAPER_3DCC_CORRUPTIONS = ("near_focus", "far_focus", "fog_3d", "flash", "xy_motion_blur", "z_motion_blur", "view_jitter")
SEVERITIES = (1, 2, 3, 4, 5)


# --------------------------------------------------------------------------------------------------
# ImageNet-A: 200 of the 1000 classes (docs/metrics.md, ImageNet-A)


def imagenet_a_classes() -> tuple[list[int], list[str]]:
    """ImageNet-1k indices and wnids of the 200 ImageNet-A classes, from timm's package data."""
    return [int(i) for i in timm_info("imagenet_a_indices.txt")], timm_info("imagenet_a_synsets.txt")


def imagenet_a_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the 200 ImageNet-A classes only: positions 0..199 (no renormalisation needed)."""
    indices, _ = imagenet_a_classes()
    return logits[:, indices].argmax(dim=-1)


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


def evaluate_imagenet_a(classifier: ImageNetClassifier, root: str | Path, **predict_kwargs) -> Scored:
    """Top-1 (a fraction) on the official ImageNet-A release (``imagenet-a/<wnid>/*.jpg``)."""
    _, wnids = imagenet_a_classes()
    paths, targets = labelled_folder(Path(root), wnids)
    found = predict_logits(classifier, paths, desc="imagenet-a", **predict_kwargs)
    correct = imagenet_a_predictions(found.logits) == torch.tensor(targets)[found.kept]
    return Scored({"top1": correct.float().mean().item()}, len(found.kept), len(paths), "images", found.skipped)


# --------------------------------------------------------------------------------------------------
# ImageNet-Vid-Robust: pm-k over neighbouring frames (docs/metrics.md, ImageNet-Vid-Robust)


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


# --------------------------------------------------------------------------------------------------
# ImageNet-3DCC: accuracy drop per corruption and severity (docs/metrics.md, ImageNet-3DCC)


def delta_accuracy(clean: float, accuracy: Mapping[str, Mapping[int, float]]) -> dict:
    """Δ-accuracy = clean − corrupted: per corruption (mean over severities), per severity (mean over
    corruptions; the paper's Fig. 2) and overall."""
    per_corruption = {c: clean - float(np.mean(list(by_s.values()))) for c, by_s in accuracy.items()}
    severities = sorted({s for by_s in accuracy.values() for s in by_s})
    per_severity = {
        s: clean - float(np.mean([by_s[s] for by_s in accuracy.values() if s in by_s])) for s in severities
    }
    overall = float(np.mean(list(per_corruption.values()))) if per_corruption else float("nan")
    return {"per_corruption": per_corruption, "per_severity": per_severity, "mean": overall}


def folder_accuracy(classifier: ImageNetClassifier, folder: Path, desc: str, **predict_kwargs) -> tuple[float, Logits, int]:
    """Top-1 (fraction) on an ImageNet-style ``<wnid>/<image>`` folder, the logits, and the listed image count."""
    paths, targets = labelled_folder(folder, imagenet_synsets())
    found = predict_logits(classifier, paths, desc=desc, **predict_kwargs)
    accuracy = (found.logits.argmax(dim=-1) == torch.tensor(targets)[found.kept]).float().mean().item()
    return accuracy, found, len(paths)


def evaluate_3dcc(
    classifier: ImageNetClassifier,
    root: str | Path,
    clean: str | Path | float,
    corruptions: Sequence[str] = PAPER_3DCC_CORRUPTIONS,
    **predict_kwargs,
) -> Scored:
    """Accuracy per corruption and severity on ``root/<corruption>/<severity>/<wnid>/<image>`` and the
    Δ-accuracy against ``clean`` (an ImageNet-val folder, or its accuracy as a fraction)."""
    root = Path(root)
    skipped, used, expected = [], 0, 0
    if isinstance(clean, (int, float)):
        clean_accuracy = float(clean)
    else:
        clean_accuracy, found, listed = folder_accuracy(classifier, Path(clean), "clean", **predict_kwargs)
        skipped, used, expected = found.skipped, len(found.kept), listed
    clean_incomplete = used < expected
    incomplete: set[str] = set()
    present = [c for c in corruptions if (root / c).is_dir()]
    missing = [c for c in corruptions if c not in present]
    if missing:
        log.warning("ImageNet-3DCC: corruption folder(s) %s not found under %s; left out", missing, root)
    if not present:
        raise DataError(f"{root}: none of the corruptions {list(corruptions)} has a folder")
    accuracy: dict[str, dict[int, float]] = {}
    for corruption in present:
        levels = sorted(int(p.name) for p in (root / corruption).iterdir() if p.is_dir() and p.name.isdigit())
        if not levels:
            log.warning("ImageNet-3DCC: %s has no severity folders (1..5); left out", root / corruption)
            missing.append(corruption)
            continue
        accuracy[corruption] = {}
        for severity in levels:
            value, found, listed = folder_accuracy(classifier, root / corruption / str(severity),
                                                   f"{corruption}/{severity}", **predict_kwargs)
            accuracy[corruption][severity] = value
            skipped, used, expected = skipped + found.skipped, used + len(found.kept), expected + listed
            if len(found.kept) < listed:
                incomplete.add(corruption)
    if not accuracy:
        raise DataError(f"{root}: no corruption has severity folders named 1..5")
    delta = delta_accuracy(clean_accuracy, accuracy)
    metrics = {"clean_top1": clean_accuracy, "delta_accuracy": delta["mean"],
               **{f"delta_severity_{s}": v for s, v in delta["per_severity"].items()}}
    note = (f"corruptions evaluated on every image ({used} of {expected} images readable)"
            + (f"; missing: {', '.join(missing)}" if missing else ""))
    # A corruption with an unreadable image counts as not evaluated, and an unreadable clean image adds one to
    # the expected count, as in model-vs-human's coverage: else half the images of every corruption (or of the
    # clean folder) could fail while the figure reads as whole.
    whole = [c for c in accuracy if c not in incomplete]
    return Scored(metrics, len(whole), len(corruptions) + int(clean_incomplete), note, skipped,
                  {"accuracy": accuracy, "delta": delta, "missing_corruptions": missing})


# --------------------------------------------------------------------------------------------------
# The registered evaluations


def scored_result(name: str, scored: Scored, kinds: Mapping[str, str], labels: Mapping[str, str]) -> Result:
    metrics = {key: Metric(value, kinds.get(key, "proportion"), labels.get(key, key))
               for key, value in scored.metrics.items()}
    return Result(name, metrics, {}, Coverage(scored.used, scored.expected, scored.note), skipped=scored.skipped)


def require_root(evaluation: Evaluation, settings: InferenceSettings, has_encoder: bool) -> None:
    Evaluation.check(evaluation, settings, has_encoder)
    if getattr(settings, "root", None) is None:
        raise VitoError(f"vito eval {evaluation.name} needs --root DIR")


@dataclass
class ImageNetASettings(InferenceSettings):
    root: Path = field(default=None, metadata={"help": "ImageNet-A release folder (imagenet-a/<wnid>/*.jpg)",
                                               "cli": {"required": True}})


@register
class ImageNetA(Evaluation):
    name = "imagenet-a"
    Settings = ImageNetASettings
    uses_classifier = True
    group = "ood"
    help = "top-1 on ImageNet-A (natural adversarial images, 200 classes)"

    def check(self, settings: ImageNetASettings, has_encoder: bool) -> None:
        require_root(self, settings, has_encoder)

    def run(self, encoder: Encoder, settings: ImageNetASettings, out_dir: Path) -> Result:
        model = attach_head(encoder, settings.classifier)
        scored = evaluate_imagenet_a(model, settings.root, **settings.predict_kwargs())
        return scored_result(self.name, scored, {}, {"top1": "top-1"})


@dataclass
class VidRobustSettings(InferenceSettings):
    root: Path = field(default=None, metadata={
        "help": "ImageNet-Vid-Robust folder (metadata/*.json and the frames named in it)", "cli": {"required": True}})


@register
class ImageNetVidRobust(Evaluation):
    name = "imagenet-vid-robust"
    Settings = VidRobustSettings
    uses_classifier = True
    group = "ood"
    help = "pm-0 and pm-10 accuracy on ImageNet-Vid-Robust (30 superclasses, neighbouring video frames)"

    def check(self, settings: VidRobustSettings, has_encoder: bool) -> None:
        require_root(self, settings, has_encoder)

    def run(self, encoder: Encoder, settings: VidRobustSettings, out_dir: Path) -> Result:
        model = attach_head(encoder, settings.classifier)
        scored = evaluate_vid_robust(model, settings.root, **settings.predict_kwargs())
        return scored_result(self.name, scored, {}, {"pm0": "pm-0 top-1", "pm10": "pm-10 top-1"})


def result_path(item: str | Path) -> Path:
    """A 3DCC output folder's ``result.json`` named directly or through the folder that holds it."""
    return Path(item) if Path(item).is_file() else Path(item) / "result.json"


def per_severity_of(item: str | Path) -> tuple[str, dict[str, float]]:
    """(label, Δ-accuracy per severity) of an earlier ``vito eval imagenet-3dcc`` output."""
    path = result_path(item)
    if not path.is_file():
        raise DataError(f"no ImageNet-3DCC result at {path}")
    result = read_result(path.parent)
    if result.evaluation != "imagenet-3dcc":
        raise DataError(f"{path} is a {result.evaluation} result, not imagenet-3dcc")
    severities = {key.rsplit("_", 1)[1]: m.value for key, m in result.metrics.items()
                  if key.startswith("delta_severity_")}
    return result.encoder.get("name") or path.parent.name, severities


def plot_3dcc(items: Sequence[str | Path], out: Path, current: tuple[str, dict] | None = None) -> Path:
    """Fig. 2 from several 3DCC output folders (and this run), one line per model."""
    curves = dict([current] if current else [])
    for item in items:
        name, severities = per_severity_of(item)
        curves[name if name not in curves else f"{name} ({Path(item).name})"] = severities
    return plot_delta_accuracy(curves, out)


@dataclass
class ImageNet3DCCSettings(InferenceSettings):
    root: Path | None = field(default=None, metadata={"help": "ImageNet-3DCC folder "
                                                      "(<corruption>/<severity>/<wnid>/*.JPEG)"})
    clean: Path | None = field(default=None, metadata={"help": "ImageNet val folder (<wnid>/*.JPEG)"})
    clean_accuracy: float | None = field(default=None, metadata={"help": "clean top-1 as a fraction"})
    corruptions: list[str] = field(default_factory=lambda: list(PAPER_3DCC_CORRUPTIONS), metadata={
        "help": "comma-separated corruption folder names (default: the paper's)", "cli": {"sep": ","}})
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "earlier imagenet-3dcc output folders to draw on the same plot", "cli": {"nargs": "*"}})


PICTURE_3DCC = "imagenet_3dcc_delta.png"


@register
class ImageNet3DCC(Evaluation):
    name = "imagenet-3dcc"
    Settings = ImageNet3DCCSettings
    needs_encoder = "optional"  # without one: only the plot of --compare results
    uses_classifier = True
    group = "ood"
    help = "Δ-accuracy (clean − corrupted) on ImageNet-3DCC"

    def check(self, settings: ImageNet3DCCSettings, has_encoder: bool) -> None:
        if has_encoder and settings.root is None:
            raise VitoError("vito eval imagenet-3dcc needs --root DIR")
        if has_encoder and settings.clean is None and settings.clean_accuracy is None:
            raise DataError("imagenet-3dcc needs --clean DIR (ImageNet val) or --clean-accuracy X")
        if not has_encoder and not settings.compare:
            raise VitoError("vito eval imagenet-3dcc: give --encoder ENC, or --compare RESULTS... to plot only")
        if settings.clean_accuracy is not None and not 0 <= settings.clean_accuracy <= 1:
            raise VitoError(f"--clean-accuracy is a fraction in [0, 1], got {settings.clean_accuracy}")
        for item in settings.compare:  # before the evaluation, not after hours of it
            per_severity_of(item)

    def run(self, encoder: Encoder | None, settings: ImageNet3DCCSettings, out_dir: Path) -> Result:
        out = Path(out_dir) / PICTURE_3DCC
        if encoder is None:
            plot_3dcc(settings.compare, out)
            return Result(self.name, {}, {"mode": "plot"}, Coverage(len(settings.compare), len(settings.compare),
                                                                   "earlier results drawn"), pictures=[out.name])
        model = attach_head(encoder, settings.classifier)
        clean = settings.clean_accuracy if settings.clean_accuracy is not None else settings.clean
        scored = evaluate_3dcc(model, settings.root, clean, settings.corruptions, **settings.predict_kwargs())
        labels = {"clean_top1": "clean top-1", "delta_accuracy": "Δ-accuracy (mean)",
                  **{f"delta_severity_{s}": f"Δ-accuracy severity {s}" for s in SEVERITIES}}
        kinds = {key: "signed" for key in scored.metrics if key.startswith("delta")}
        result = scored_result(self.name, scored, kinds, labels)
        per_severity = {str(s): v for s, v in scored.extra["delta"]["per_severity"].items()}
        plot_3dcc(settings.compare, out, (encoder.name, per_severity))
        result.pictures = [out.name]
        result.tables = {"accuracy per corruption and severity": [
            {"corruption": c, **{f"severity {s}": v for s, v in by_s.items()},
             "delta": scored.extra["delta"]["per_corruption"][c]} for c, by_s in scored.extra["accuracy"].items()]}
        result.settings = {"missing_corruptions": scored.extra["missing_corruptions"]}
        return result
