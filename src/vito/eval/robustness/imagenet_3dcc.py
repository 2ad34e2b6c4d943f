"""``vito eval imagenet-3dcc``: Δ-accuracy (clean − corrupted) per corruption and severity on ImageNet-3DCC
(docs/metrics.md, ImageNet-3DCC); with ``--compare``, the paper's Fig. 2 beside earlier runs (``pictures``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vito.errors import DataError, VitoError
from vito.eval.core.classifier import ImageNetClassifier, InferenceSettings, attach_head
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Result
from vito.eval.robustness.shared import Scored, folder_accuracy, scored_result

log = logging.getLogger(__name__)

# ImageNet-3DCC corruptions the paper uses (A.7). "view_jitter" is not an ImageNet-3DCC name in any release we
# know of; it is evaluated when a folder of that name exists and reported as missing otherwise.
PAPER_3DCC_CORRUPTIONS = ("near_focus", "far_focus", "fog_3d", "flash", "xy_motion_blur", "z_motion_blur",
                          "view_jitter")
SEVERITIES = (1, 2, 3, 4, 5)


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
    headline = "delta_accuracy"  # clean minus corrupted top-1, the paper's Fig. 2 (signed; lower is better)
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
        from vito.eval.robustness.pictures import per_severity_of  # matplotlib: kept out of `vito eval --help`

        for item in settings.compare:  # before the evaluation, not after hours of it
            per_severity_of(item)

    def run(self, encoder: Encoder | None, settings: ImageNet3DCCSettings, out_dir: Path) -> Result:
        from vito.eval.robustness.pictures import plot_3dcc  # matplotlib: kept out of `vito eval --help`

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
