"""Robustness to natural and synthetic shifts: ImageNet-A, ImageNet-Vid-Robust, ImageNet-3DCC (paper §4.1, A.7).

All three reuse one frozen ImageNet classifier (encoder + linear probe, or a model's own head) and only differ
in how its 1000 logits are read: ImageNet-A keeps 200 of them, Vid-Robust pools them into 30 superclasses and
asks for stability over neighbouring video frames, 3DCC measures the drop from clean to corrupted accuracy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from vito.errors import DataError, VitoError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# ImageNet-3DCC corruptions the paper uses (A.7). "view_jitter" is not an ImageNet-3DCC name in any release we
# know of; it is evaluated when a folder of that name exists and reported as missing otherwise.
PAPER_3DCC_CORRUPTIONS = ("near_focus", "far_focus", "fog_3d", "flash", "xy_motion_blur", "z_motion_blur", "view_jitter")
SEVERITIES = (1, 2, 3, 4, 5)


# --------------------------------------------------------------------------------------------------
# One classifier for every evaluation


class ImageNetClassifier(nn.Module):
    """Frozen encoder → 1000 ImageNet logits, through a linear head on its embedding (a probe from
    ``vito eval linear``) or, without one, through the encoder's own architecture end to end.

    Every robustness and alignment evaluation reads its logits from this one module, so VITO and the
    baselines are scored through the same path. The own-head path runs the whole model rather than its
    last layer on ``embed``: many architectures (ConvNeXt, EfficientNet) normalise or project the pooled
    features before their classifier.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        if head is None and getattr(encoder, "classifier", None) is None:
            raise VitoError("this encoder has no ImageNet head of its own: pass a linear head from `vito eval linear`")
        self.encoder = encoder
        self.head = head
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.encoder.model(images)
        return self.head(self.encoder.embed(images))


def load_classifier(encoder: str, weights: str | Path | None, head: str | Path | None) -> ImageNetClassifier:
    """``--encoder ENC [--weights W] --classifier HEAD``; HEAD is a linear-head file or ``own``."""
    from vito.eval.encoders import load_encoder

    return attach_head(load_encoder(encoder, weights=weights), head)


def attach_head(encoder: nn.Module, head: str | Path | None) -> ImageNetClassifier:
    """The encoder with its own head (``None`` or ``own``) or a saved linear head that fits its features."""
    if head is None or str(head) == "own":
        return ImageNetClassifier(encoder)  # e.g. a supervised torchvision:resnet50 with its weights file
    from vito.eval.probes import load_linear_head

    linear = load_linear_head(head)
    if linear.out_features != 1000 or linear.in_features != encoder.feature_dim:
        raise VitoError(f"{head}: a {linear.in_features}→{linear.out_features} head does not map this encoder's "
                        f"{encoder.feature_dim}-d features to the 1000 ImageNet classes")
    classes = list(getattr(linear, "meta", {}).get("classes", []))
    if classes and classes != imagenet_synsets():
        log.warning("%s was trained on class folders that are not the ImageNet-1k wnids (%s, ...); its outputs "
                    "are read in ImageNet index order", head, ", ".join(classes[:3]))
    return ImageNetClassifier(encoder, linear)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImagePaths(torch.utils.data.Dataset):
    """Images from a list of files, RGB-converted and transformed; unreadable files raise ``DataError``."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            with Image.open(self.paths[index]) as image:
                return self.transform(image.convert("RGB"))
        except OSError as error:
            raise DataError(f"cannot read image {self.paths[index]}: {error}") from error


def predict_logits(
    classifier: nn.Module,
    paths: Sequence[Path],
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "classifying",
) -> torch.Tensor:
    """``[N, C]`` logits of ``classifier`` on the image files, in order (CPU float tensor)."""
    from vito.eval.encoders import inference_mode
    from vito.eval.features import EvalTransform

    loader = torch.utils.data.DataLoader(
        ImagePaths(paths, EvalTransform(image_size)), batch_size=batch_size, num_workers=num_workers
    )
    classifier = classifier.to(device).eval()
    with inference_mode(device):
        outputs = [classifier(batch.to(device)).float().cpu() for batch in tqdm(loader, desc=desc, leave=False)]
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


# --------------------------------------------------------------------------------------------------
# ImageNet-A: 200 of the 1000 classes (spec §5)


def _timm_info(name: str) -> list[str]:
    text = resources.files("timm.data._info").joinpath(name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet_a_classes() -> tuple[list[int], list[str]]:
    """ImageNet-1k indices and wnids of the 200 ImageNet-A classes, from timm's package data."""
    return [int(i) for i in _timm_info("imagenet_a_indices.txt")], _timm_info("imagenet_a_synsets.txt")


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    return _timm_info("imagenet_synsets.txt")


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


def evaluate_imagenet_a(classifier: nn.Module, root: str | Path, **predict_kwargs) -> dict:
    """Top-1 (%) on the official ImageNet-A release (``imagenet-a/<wnid>/*.jpg``)."""
    _, wnids = imagenet_a_classes()
    paths, targets = labelled_folder(Path(root), wnids)
    logits = predict_logits(classifier, paths, desc="imagenet-a", **predict_kwargs)
    correct = imagenet_a_predictions(logits) == torch.tensor(targets)
    return {"benchmark": "imagenet-a", "top1": 100.0 * correct.float().mean().item(), "images": len(paths)}


# --------------------------------------------------------------------------------------------------
# ImageNet-Vid-Robust: pm-k over neighbouring frames (spec §4)


class VidRobustMetadata:
    """The release's JSON files: frame labels, pm-k neighbour sets and the 30-superclass map."""

    FILES = ("labels.json", "pmsets.json", "rev_class_idx_map.json")

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        folder = root / "metadata" if (root / "metadata").is_dir() else root
        missing = [name for name in self.FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(f"{folder}: missing ImageNet-Vid-Robust metadata {', '.join(missing)}")
        self.labels: dict[str, list[int]] = json.loads((folder / "labels.json").read_text())
        self.pmsets: dict[str, list[str]] = json.loads((folder / "pmsets.json").read_text())
        reverse = json.loads((folder / "rev_class_idx_map.json").read_text())
        self.members: list[list[int]] = [reverse[str(k)] for k in range(len(reverse))]
        self.image_root = root / "frames" if (root / "frames").is_dir() else root


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


def evaluate_vid_robust(classifier: nn.Module, root: str | Path, **predict_kwargs) -> dict:
    """pm0 and pm10 top-1 (%) on the release layout (``metadata/*.json`` + frames named as in the JSON keys)."""
    meta = VidRobustMetadata(root)
    complete = {a: n for a, n in meta.pmsets.items() if all((meta.image_root / f).is_file() for f in [a, *n])}
    skipped = len(meta.pmsets) - len(complete)
    if skipped:
        log.warning("ImageNet-Vid-Robust: %d of %d anchors skipped (frames missing under %s)",
                    skipped, len(meta.pmsets), meta.image_root)
    if not complete:
        raise DataError(f"{meta.image_root}: no anchor has all of its frames on disk")
    frames = sorted({f for a, n in complete.items() for f in [a, *n]})
    logits = predict_logits(classifier, [meta.image_root / f for f in frames], desc="vid-robust", **predict_kwargs)
    predicted = dict(zip(frames, superclass_predictions(logits, meta.members).tolist()))
    scores = pm_k_accuracy(predicted, meta.labels, complete)
    return {"benchmark": "imagenet-vid-robust", "pm0": 100 * scores["pm0"], "pm10": 100 * scores["pm10"],
            "anchors": scores["anchors"], "anchors_skipped": skipped, "frames": len(frames)}


# --------------------------------------------------------------------------------------------------
# ImageNet-3DCC: accuracy drop per corruption and severity (spec §6)


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


def folder_accuracy(classifier: nn.Module, folder: Path, desc: str, **predict_kwargs) -> float:
    """Top-1 (fraction) on an ImageNet-style ``<wnid>/<image>`` folder."""
    paths, targets = labelled_folder(folder, imagenet_synsets())
    logits = predict_logits(classifier, paths, desc=desc, **predict_kwargs)
    return (logits.argmax(dim=-1) == torch.tensor(targets)).float().mean().item()


def evaluate_3dcc(
    classifier: nn.Module,
    root: str | Path,
    clean: str | Path | float,
    corruptions: Sequence[str] = PAPER_3DCC_CORRUPTIONS,
    **predict_kwargs,
) -> dict:
    """Accuracy per corruption and severity on ``root/<corruption>/<severity>/<wnid>/<image>`` and the
    Δ-accuracy against ``clean`` (an ImageNet-val folder, or its accuracy as a fraction)."""
    root = Path(root)
    if isinstance(clean, (int, float)):
        clean_accuracy = float(clean)
    else:
        clean_accuracy = folder_accuracy(classifier, Path(clean), "clean", **predict_kwargs)
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
            continue
        accuracy[corruption] = {
            s: folder_accuracy(classifier, root / corruption / str(s), f"{corruption}/{s}", **predict_kwargs)
            for s in levels
        }
    if not accuracy:
        raise DataError(f"{root}: no corruption has severity folders named 1..5")
    return {"benchmark": "imagenet-3dcc", "clean_accuracy": clean_accuracy, "accuracy": accuracy,
            "delta_accuracy": delta_accuracy(clean_accuracy, accuracy), "missing_corruptions": missing}


# --------------------------------------------------------------------------------------------------
# Command-line entry points


BENCHMARKS = ("imagenet-a", "imagenet-vid-robust", "imagenet-3dcc")


def run_robustness(
    benchmark: str,
    out: str | Path,
    root: str | Path,
    encoder: str,
    weights: str | Path | None = None,
    classifier: str | None = None,
    clean: str | Path | float | None = None,
    compare: Sequence[str | Path] = (),
    **predict_kwargs,
) -> dict:
    """``vito eval imagenet-a|imagenet-vid-robust|imagenet-3dcc``: evaluate, write ``OUT/<benchmark>.json`` and
    a one-line ``OUT/<benchmark>.md`` (and for 3DCC the Δ-accuracy plot with the earlier results in ``compare``)."""
    from vito.eval.encoders import pick_device
    from vito.io import atomic_write, write_json

    missing = [str(item) for item in compare if not result_path(item).is_file()]
    if missing:  # before the evaluation, not after hours of it
        raise DataError(f"no ImageNet-3DCC result to compare with at {', '.join(missing)}")
    predict_kwargs["device"] = pick_device(str(predict_kwargs.get("device", "auto")))
    model = load_classifier(encoder, weights, classifier)
    if benchmark == "imagenet-a":
        result = evaluate_imagenet_a(model, root, **predict_kwargs)
    elif benchmark == "imagenet-vid-robust":
        result = evaluate_vid_robust(model, root, **predict_kwargs)
    elif benchmark == "imagenet-3dcc":
        if clean is None:
            raise DataError("imagenet-3dcc needs --clean DIR (ImageNet val) or --clean-accuracy X")
        result = evaluate_3dcc(model, root, clean, **predict_kwargs)
    else:
        raise VitoError(f"unknown benchmark {benchmark!r} (choose from {', '.join(BENCHMARKS)})")
    result["encoder"] = model.encoder.name
    out = Path(out)
    write_json(out / f"{benchmark.replace('-', '_')}.json", result)
    with atomic_write(out / f"{benchmark.replace('-', '_')}.md") as handle:
        handle.write(summary(result) + "\n")
    if benchmark == "imagenet-3dcc":
        plot_3dcc([out / "imagenet_3dcc.json", *compare], out / "imagenet_3dcc_delta.png")
    return result


def summary(result: Mapping) -> str:
    """One line for the terminal and ``OUT/<benchmark>.md``."""
    name, benchmark = result.get("encoder", "model"), result["benchmark"]
    if benchmark == "imagenet-a":
        return f"ImageNet-A — {name}: top-1 {result['top1']:.2f} % on {result['images']} images"
    if benchmark == "imagenet-vid-robust":
        return (f"ImageNet-Vid-Robust — {name}: pm0 {result['pm0']:.2f} %, pm10 {result['pm10']:.2f} % on "
                f"{result['anchors']} anchors ({result['anchors_skipped']} skipped: frames missing)")
    delta = result["delta_accuracy"]
    per_severity = ", ".join(f"{100 * v:.2f}" for _, v in sorted(delta["per_severity"].items(), key=lambda kv: int(kv[0])))
    return (f"ImageNet-3DCC — {name}: clean top-1 {100 * result['clean_accuracy']:.2f} %, Δ-accuracy (points) "
            f"{100 * delta['mean']:.2f} over {len(delta['per_corruption'])} corruptions; per severity {per_severity}")


def result_path(item: str | Path) -> Path:
    """An ``imagenet_3dcc.json`` named directly or through the output folder that holds it."""
    return Path(item) / "imagenet_3dcc.json" if Path(item).is_dir() else Path(item)


def plot_3dcc(result_files: Sequence[str | Path], out: str | Path) -> Path:
    """Fig. 2 from several ``imagenet_3dcc.json`` files (or run folders holding one), one line per model."""
    from vito.viz.robustness import plot_delta_accuracy

    results = {}
    for item in result_files:
        path = result_path(item)
        if not path.is_file():
            raise DataError(f"no ImageNet-3DCC result at {path}")
        result = json.loads(path.read_text())
        results[result.get("encoder") or path.parent.name] = result
    return plot_delta_accuracy(results, out)
