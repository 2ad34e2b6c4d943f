"""Human saliency alignment on ClickMe (docs/metrics.md, paper §4.2 and A.8).

People playing ClickMe reveal the parts of an image they find most useful for recognising it. A model is
aligned when its own saliency map ranks image regions the same way: the score is the Spearman rank correlation
between the two maps, averaged over images and divided by the human inter-rater ceiling.

VITO's saliency is its own attention (the pooling maps of both stages, upsampled and averaged); models without
attention pooling get gradient saliency (|d logit_true / d pixel|, max over colour channels), as in Fel et al.
The human maps are prepared exactly as the Harmonization code does (resize, blur, resize).
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vito.errors import DataError, VitoError
from vito.eval.core.base import Coverage, Evaluation, Metric, Result, register
from vito.eval.core.classifier import CLASSIFIER_HELP, attach_head
from vito.eval.core.encoders import Encoder
from vito.eval.human.clickme_pictures import plot_saliency_overlays
from vito.io import atomic_write

log = logging.getLogger(__name__)

HUMAN_SPEARMAN_CEILING = 0.65753  # mean Spearman between human raters (Harmonization); scores may exceed 1
MAP_SIZE = 224
BLUR_SIZE, BLUR_SIGMA = 10, 10.0


# --------------------------------------------------------------------------------------------------
# Human maps


def gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The reference's ``[size, size]`` Gaussian (sums to 1), with its offsets for an even size.

    Rows run over offsets ``(size-1)//2 … -(size-1)//2 - 1`` and columns over ``-(size-1)//2 - 1 …``, as in
    ``harmonization/common/blur.py`` with Python's floor division.
    """
    half = (size - 1) // 2
    xs = torch.arange(-(size - 1) // 2, half + 1, dtype=torch.float64)
    ys = torch.arange(half, -(size - 1) // 2 - 1, -1, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    kernel = torch.exp(-(grid_x**2 + grid_y**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).float()


def blur_same(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """TensorFlow-style ``SAME`` cross-correlation of ``[B, H, W]`` maps (zero padding, extra pad after)."""
    size = kernel.shape[-1]
    before, after = (size - 1) // 2, size // 2
    padded = F.pad(maps[:, None], (before, after, before, after))
    return F.conv2d(padded, kernel[None, None].to(maps))[:, 0]


def resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[B, H, W]`` maps (half-pixel centres, no antialiasing: ``tf.image.resize``)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def preprocess_human_maps(heatmaps: torch.Tensor) -> torch.Tensor:
    """ClickMe click maps ``[B, H, W]`` (256×256 in the release) → blurred ``[B, 224, 224]`` float maps."""
    if heatmaps.dim() == 2:
        heatmaps = heatmaps[None]
    small = resize(heatmaps.float(), 64)
    return resize(blur_same(small, gaussian_kernel()), MAP_SIZE)


# --------------------------------------------------------------------------------------------------
# Scores


def spearman_per_image(model_maps: torch.Tensor | np.ndarray, human_maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each image's flattened maps (ties get average ranks); nan if a map is flat."""
    a = np.asarray(model_maps, dtype=np.float64).reshape(len(model_maps), -1)
    b = np.asarray(human_maps, dtype=np.float64).reshape(len(human_maps), -1)
    if a.shape != b.shape:
        raise ValueError(f"model maps {a.shape} and human maps {b.shape} differ in shape")
    ranks_a = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    ranks_b = rankdata(b, axis=1) - (b.shape[1] + 1) / 2
    denominator = np.sqrt((ranks_a**2).sum(1) * (ranks_b**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ranks_a * ranks_b).sum(1) / denominator, np.nan)


def top_fraction_overlap(model_maps: np.ndarray, human_maps: np.ndarray, percentile: float = 10) -> dict[str, np.ndarray]:
    """Dice and IoU of the two maps' top ``percentile`` % regions (the reference's secondary scores)."""
    a = np.asarray(model_maps, dtype=np.float64).reshape(len(model_maps), -1)
    b = np.asarray(human_maps, dtype=np.float64).reshape(len(human_maps), -1)
    top_a = a > np.percentile(a, 100 - percentile, axis=1, keepdims=True)
    top_b = b > np.percentile(b, 100 - percentile, axis=1, keepdims=True)
    inter = (top_a & top_b).sum(1)
    return {
        "dice": 2.0 * inter / (top_a.sum(1) + top_b.sum(1) + 1e-9),
        "iou": inter / ((top_a | top_b).sum(1) + 1e-9),
    }


def alignment_score(spearman: np.ndarray) -> float:
    """Mean Spearman over images divided by the human ceiling (flat maps, whose rho is undefined, left out)."""
    values = np.asarray(spearman, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean() / HUMAN_SPEARMAN_CEILING) if values.size else math.nan


# --------------------------------------------------------------------------------------------------
# Model saliency


def gradient_saliency(
    classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """``max_c |d logit[label] / d pixel[c]|`` → ``[B, H, W]`` (one backward pass for the whole batch).

    ``images`` are mean/std normalised; the gradient is taken w.r.t. the un-normalised pixels, as in the
    reference (whose models normalise inside), i.e. divided by each channel's std before the max over channels.
    """
    images = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(images)
        chosen = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
        (gradient,) = torch.autograd.grad(chosen, images)
    scale = torch.tensor(std, dtype=gradient.dtype, device=gradient.device).view(1, -1, 1, 1)
    return (gradient.abs() / scale).amax(dim=1).detach()


@torch.no_grad()
def attention_saliency(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """VITO's saliency: each stage's attention map bilinearly upsampled to the image, then averaged."""
    maps = encoder.attention_maps(images)
    if not maps:
        raise VitoError("this encoder has no attention pooling: use gradient saliency with a classifier")
    size = images.shape[-2:]
    upsampled = [F.interpolate(m[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] for m in maps]
    return torch.stack(upsampled).mean(dim=0)


def has_attention(encoder: nn.Module, probe: torch.Tensor) -> bool:
    """Whether ``encoder`` pools with attention: its maps vary over positions (average pooling gives flat ones)."""
    attention = getattr(encoder, "attention_maps", None)
    maps = attention(probe[:1]) if attention is not None else None
    return bool(maps) and any(bool(m.amax() > m.amin()) for m in maps)


# --------------------------------------------------------------------------------------------------
# Data: a folder of .npz files (docs/clickme.md)


@dataclass
class ClickMeBatch:
    images: torch.Tensor  # [B, 3, 224, 224] normalised
    pixels: torch.Tensor  # [B, 224, 224, 3] uint8, for pictures
    human_maps: torch.Tensor  # [B, 224, 224] preprocessed
    labels: torch.Tensor  # [B] ImageNet class indices
    names: list[str]


# How np.load fails on an .npz that is empty, truncated, corrupt inside, not a zip, pickled, or lacks a key.
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def clickme_files(root: str | Path) -> list[Path]:
    root = Path(root)
    files = sorted(root.rglob("*.npz")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no ClickMe .npz files (see docs/clickme.md for the expected layout)")
    return files


def read_clickme_file(path: Path) -> dict[str, np.ndarray]:
    """Arrays ``image`` ``[N, H, W, 3]``, ``heatmap`` ``[N, H, W]`` and ``label`` ``[N]`` of one ``.npz``.

    One example may be stored without its batch axis. Grey images (no or one channel) are repeated to RGB and
    an alpha channel is dropped, so odd image modes read like RGB; anything else is a ``DataError``.
    """
    try:
        with np.load(path) as data:
            image, heatmap, label = (data[key] for key in ("image", "heatmap", "label"))
    except NPZ_ERRORS as error:
        raise DataError(f"{path}: not a ClickMe .npz with image, heatmap and label arrays ({error})") from error
    if label.ndim == 0 or (label.size == 1 and image.ndim == 3 and image.shape[-1] in (3, 4)):
        image, heatmap, label = image[None], heatmap[None], label.reshape(1)
    if heatmap.ndim == 4:
        heatmap = heatmap.mean(-1)
    if image.ndim == 3:
        image = image[..., None]
    if (image.ndim != 4 or image.shape[-1] not in (1, 3, 4) or heatmap.ndim != 3 or label.ndim != 1
            or not len(image) == len(heatmap) == len(label)):
        raise DataError(f"{path}: expected image [N,H,W,3], heatmap [N,H,W] and label [N]; got "
                        f"{list(image.shape)}, {list(heatmap.shape)} and {list(label.shape)}")
    if label.size and not (np.issubdtype(label.dtype, np.integer) and 0 <= label.min() and label.max() < 1000):
        raise DataError(f"{path}: labels must be ImageNet-1k class indices 0..999")
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return {"image": image, "heatmap": heatmap, "label": label.astype(np.int64)}


def iter_clickme(root: str | Path, batch_size: int = 64, image_size: int = MAP_SIZE) -> Iterator[ClickMeBatch]:
    """Batches from every ``.npz`` under ``root``; images resized bilinearly to ``image_size``."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for path in clickme_files(root):
        arrays = read_clickme_file(path)
        for start in range(0, len(arrays["label"]), batch_size):
            part = slice(start, start + batch_size)
            pixels = torch.from_numpy(np.ascontiguousarray(arrays["image"][part])).permute(0, 3, 1, 2).float()
            pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
            human = preprocess_human_maps(torch.from_numpy(np.ascontiguousarray(arrays["heatmap"][part])))
            yield ClickMeBatch(
                images=(pixels / 255.0 - mean) / std,
                pixels=pixels.clamp(0, 255).round().byte().permute(0, 2, 3, 1),
                human_maps=resize(human, image_size) if image_size != MAP_SIZE else human,
                labels=torch.from_numpy(np.asarray(arrays["label"][part], dtype=np.int64)),
                names=[f"{path.stem}:{i}" for i in range(start, start + len(arrays["label"][part]))],
            )


def evaluate_clickme(
    encoder: nn.Module,
    root: str | Path,
    classifier: nn.Module | None = None,
    method: str = "auto",
    batch_size: int = 64,
    image_size: int = MAP_SIZE,
    keep_examples: int = 8,
    device: str | torch.device | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Alignment score of ``encoder``'s saliency with ClickMe; returns (results, example maps for pictures).

    ``method``: ``attention`` (VITO), ``gradient`` (needs ``classifier``) or ``auto`` (attention when the
    encoder has attention pooling, else gradient).
    """
    device = device if device is not None else next(encoder.parameters(), torch.empty(0)).device
    encoder = encoder.to(device).eval()
    spearman, dice, iou = [], [], []
    examples: dict[str, list[np.ndarray]] = {"pixels": [], "human": [], "model": [], "names": []}
    for batch in tqdm(iter_clickme(root, batch_size, image_size), desc="clickme", unit="batch", leave=False):
        images = batch.images.to(device)
        if method == "auto":
            method = "attention" if has_attention(encoder, images) else "gradient"
        if method == "attention":
            maps = attention_saliency(encoder, images)
        elif classifier is None:
            raise VitoError("gradient saliency needs an ImageNet classifier (--classifier HEAD or own)")
        else:
            maps = gradient_saliency(classifier.to(device).eval(), images, batch.labels)
        maps = maps.cpu().numpy()
        spearman.append(spearman_per_image(maps, batch.human_maps.numpy()))
        overlap = top_fraction_overlap(maps, batch.human_maps.numpy())
        dice.append(overlap["dice"])
        iou.append(overlap["iou"])
        room = keep_examples - len(examples["names"])
        if room > 0:
            examples["pixels"] += list(batch.pixels[:room].numpy())
            examples["human"] += list(batch.human_maps[:room].numpy())
            examples["model"] += list(maps[:room])
            examples["names"] += batch.names[:room]
    rho = np.concatenate(spearman)
    flat = int(np.isnan(rho).sum())
    if flat:
        log.warning("ClickMe: %d images with a constant map (undefined Spearman) left out", flat)
    results = {
        "benchmark": "clickme",
        "saliency": method,
        "images": int(rho.size),
        "undefined_spearman": flat,
        "spearman_mean": float(np.nanmean(rho)) if rho.size > flat else math.nan,
        "alignment": alignment_score(rho),
        "human_ceiling": HUMAN_SPEARMAN_CEILING,
        "dice_top10": float(np.concatenate(dice).mean()),
        "iou_top10": float(np.concatenate(iou).mean()),
    }
    return results, {key: np.stack(value) if key != "names" else np.array(value) for key, value in examples.items()}


# --------------------------------------------------------------------------------------------------
# `vito eval clickme`

EXAMPLES, PICTURE = "clickme_examples.npz", "clickme_overlays.png"


def compare_clickme(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Fig. 3 from several ``vito eval clickme`` output folders (the same images, in the same order)."""
    loaded = []
    for folder in run_dirs:
        path = Path(folder) / EXAMPLES
        if not path.is_file():
            raise DataError(f"no ClickMe examples at {path}")
        try:
            with np.load(path) as data:
                loaded.append({key: data[key] for key in data.files})
        except NPZ_ERRORS as error:
            raise DataError(f"{path}: unreadable ClickMe examples of an earlier run ({error})") from error
    first = loaded[0]
    for other in loaded[1:]:
        if list(other["names"]) != list(first["names"]):
            raise DataError("the ClickMe runs to compare used different example images")
    models: dict[str, np.ndarray] = {}
    for folder, data in zip(run_dirs, loaded):
        name = str(data["model_name"])
        models[name if name not in models else f"{name} ({Path(folder).name})"] = data["model"]
    return plot_saliency_overlays(first["pixels"], first["human"], models, out)


@dataclass
class ClickMeSettings:
    root: Path | None = field(default=None, metadata={"help": "folder of ClickMe .npz files (docs/datasets.md)"})
    classifier: str | None = field(default=None, metadata={"help": CLASSIFIER_HELP + " (needed for gradient "
                                                                                     "saliency)"})
    saliency: Literal["auto", "attention", "gradient"] = field(default="auto", metadata={
        "help": "auto: attention for encoders with attention pooling, else gradient"})
    image_size: int = field(default=MAP_SIZE, metadata={"help": "evaluation resolution"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "earlier clickme output folders to draw beside", "cli": {"nargs": "*"}})


@register
class ClickMe(Evaluation):
    name = "clickme"
    Settings = ClickMeSettings
    needs_encoder = "optional"  # without one: only the overlays of --compare runs
    uses_classifier = True
    group = "human"
    help = "alignment of saliency with ClickMe human maps (normalised Spearman)"
    description = ("VITO encoders use their attention maps; others gradient saliency of a classifier. "
                   "See docs/datasets.md for the expected data layout.")

    def check(self, settings: ClickMeSettings, has_encoder: bool) -> None:
        if not has_encoder and not settings.compare:
            raise VitoError("vito eval clickme: give --encoder ENC, or --compare RUN_DIRS... to draw overlays only")
        if has_encoder and settings.root is None:
            raise VitoError("vito eval clickme: --root DIR (ClickMe .npz files) is required")
        missing = [str(f) for f in settings.compare if not (Path(f) / EXAMPLES).is_file()]
        if missing:  # before the evaluation, not after it
            raise DataError(f"no ClickMe examples to compare with in {', '.join(missing)}")

    def run(self, encoder: Encoder | None, settings: ClickMeSettings, out_dir: Path) -> Result:
        out_dir = Path(out_dir)
        if encoder is None:
            compare_clickme(settings.compare, out_dir / PICTURE)
            count = len(settings.compare)
            return Result(self.name, {}, {"mode": "compare"}, Coverage(count, count, "earlier runs drawn"),
                          pictures=[PICTURE])
        head = attach_head(encoder, settings.classifier) if settings.classifier is not None else None
        scores, examples = evaluate_clickme(encoder, settings.root, head, method=settings.saliency,
                                            batch_size=settings.batch_size, image_size=settings.image_size)
        with atomic_write(out_dir / EXAMPLES, "wb") as handle:
            np.savez_compressed(handle, **examples, model_name=np.array(encoder.name))
        compare_clickme([out_dir, *settings.compare], out_dir / PICTURE)
        metrics = {"alignment": Metric(scores["alignment"], "value", "alignment (Spearman / human ceiling)"),
                   "spearman_mean": Metric(scores["spearman_mean"], "signed", "mean Spearman"),
                   "dice_top10": Metric(scores["dice_top10"], "proportion", "Dice of the top 10 %"),
                   "iou_top10": Metric(scores["iou_top10"], "proportion", "IoU of the top 10 %")}
        defined = scores["images"] - scores["undefined_spearman"]
        coverage = Coverage(defined, scores["images"], "images with a defined Spearman (a flat map has none)")
        return Result(self.name, metrics, {"saliency_used": scores["saliency"], "human_ceiling": HUMAN_SPEARMAN_CEILING},
                      coverage, pictures=[PICTURE], artifacts={"examples": EXAMPLES})
