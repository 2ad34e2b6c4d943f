"""DAVIS video object segmentation: label propagation with frozen features (VFS protocol) and J&F scoring.

Two halves that meet at a results folder in the official layout (``RESULTS/<sequence>/<frame>.png``,
palette PNGs whose indices are object ids):

* ``propagate_davis`` encodes every frame, at a short side of 480 pixels, with a frozen encoder (ResNet res4
  at stride 8, VFS test-time strides (1, 2, 1, 1), no dilation) and carries the first frame's labels forward by top-k attention over
  the first frame and the 20 preceding frames (docs/metrics.md, DAVIS).
* ``score_results`` computes J (region IoU) and F (boundary F-measure) with the semantics of the official
  davis2017-evaluation code (docs/metrics.md, DAVIS): first and last frames dropped (and never read from the results),
  objects weighted equally, GT void counted as background.

Both DAVIS-2017 (palette PNGs, 255 = void) and DAVIS-2016 (grey PNGs, 0/255 for one object) are read.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.spatial import cKDTree
from tqdm import tqdm

from vito.data.imagenet import normalize
from vito.data.images import BOMBS, bombs_are_errors
from vito.errors import DataError, VitoError
from vito.eval.core.base import Coverage, Evaluation, Metric, Result, register
from vito.eval.core.encoders import Encoder, inference_mode
from vito.io import atomic_write

log = logging.getLogger(__name__)

VOID = 255
BOUND_TH = 0.008  # official boundary tolerance: a fraction of the image diagonal


# --------------------------------------------------------------------------------------------------
# Dataset layout


@dataclass
class DavisSequence:
    name: str
    frames: list[Path]  # JPEGImages/<res>/<name>/*.jpg
    annotations: list[Path]  # Annotations/<res>/<name>/*.png


def find_sequences(
    root: str | Path, resolution: str = "480p", names: Sequence[str] | None = None
) -> list[DavisSequence]:
    """The sequences under ``root`` (all of them, or ``names``); a named sequence that is missing is an error."""
    root = Path(root)
    image_dir, annotation_dir = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not image_dir.is_dir() or not annotation_dir.is_dir():
        raise DataError(f"{root} is not a DAVIS folder: expected JPEGImages/{resolution} and Annotations/{resolution}")
    names = list(names) if names else sorted(p.name for p in annotation_dir.iterdir() if p.is_dir())
    sequences = []
    for name in names:
        frames = sorted((image_dir / name).glob("*.jpg"))
        annotations = sorted((annotation_dir / name).glob("*.png"))
        if not frames or not annotations:
            raise DataError(f"sequence {name!r} has no frames or no annotations under {root}")
        sequences.append(DavisSequence(name, frames, annotations))
    if not sequences:
        raise DataError(f"no sequences found under {annotation_dir}")
    return sequences


def read_png_ids(path: Path) -> tuple[np.ndarray, str]:
    """The ``[H, W]`` values and the PIL mode of a single-channel PNG; anything else is a ``DataError``."""
    try:
        with bombs_are_errors(), Image.open(path) as image:
            ids, mode = np.array(image), image.mode
    except (OSError, ValueError, SyntaxError, *BOMBS) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if ids.ndim != 2 or ids.max(initial=0) > 255:
        raise DataError(f"{path}: expected a single-channel 8-bit PNG (palette or grey), got mode {mode}")
    return ids.astype(np.uint8), mode


def read_object_ids(path: str | Path, layout: str = "auto") -> np.ndarray:
    """An annotation as ``uint8 [H, W]`` object ids (0 = background).

    DAVIS-2017 PNGs hold the ids directly and 255 is void, which the official semi-supervised evaluation
    treats as background. DAVIS-2016 grey PNGs hold one object as 255. ``auto`` takes a grey PNG whose
    values are only 0 and 255 as DAVIS-2016 and every other PNG (palette, or grey ids 0, 1, 2...) as DAVIS-2017.
    """
    ids, mode = read_png_ids(Path(path))
    binary_2016 = mode in ("L", "1") and not np.isin(ids, (0, VOID), invert=True).any()
    if layout == "2016" or (layout == "auto" and binary_2016):
        return (ids > 127).astype(np.uint8) if ids.max() > 1 else ids
    ids[ids == VOID] = 0
    return ids


def davis_palette() -> list[int]:
    """The DAVIS/PASCAL-VOC colour map (index i's RGB from the bits of i), flattened for ``putpalette``."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(davis_palette())
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")


# --------------------------------------------------------------------------------------------------
# Metrics (docs/metrics.md: the official davis2017-evaluation semantics)


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: intersection over union of two boolean masks; 1 when both are empty."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from the right, bottom or bottom-right neighbour (outside = background)."""
    seg = mask.astype(bool)
    right, below, diag = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _matched(points: np.ndarray, targets: np.ndarray, radius: float) -> int:
    """How many ``points`` lie within Euclidean distance ``radius`` of some target (= disk dilation test)."""
    distance, _ = cKDTree(targets).query(points, k=1, distance_upper_bound=radius + 1e-9)
    return int(np.isfinite(distance).sum())


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: boundary precision/recall with a tolerance of ``ceil(bound_th · diagonal)`` pixels."""
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        pred_points, gt_points = np.argwhere(pred_b), np.argwhere(gt_b)
        precision = _matched(pred_points, gt_points, radius) / n_pred
        recall = _matched(gt_points, pred_points, radius) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def per_object_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, recall (fraction > 0.5) and decay (first quarter minus last quarter) over kept frames."""
    values = np.asarray(values, dtype=np.float64)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return {
        "mean": float(np.nanmean(values)),
        "recall": float(np.nanmean(values > 0.5)),
        "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[3])),
    }


def evaluate_sequence(gt_ids: np.ndarray, pred_ids: np.ndarray) -> dict[int, dict[str, list[float]]]:
    """Per-object, per-kept-frame J and F of one sequence: ``{object: {"J": [...], "F": [...]}}``.

    ``gt_ids``/``pred_ids`` are ``[T, H, W]`` id maps of the whole sequence. Objects are
    ``1..max(first GT frame)``; the first and last frames are dropped, as in the official code.
    """
    return evaluate_kept_frames(gt_ids[1:-1], pred_ids[1:-1], num_objects=int(gt_ids[0].max()))


def evaluate_kept_frames(
    gt_ids: np.ndarray, pred_ids: np.ndarray, num_objects: int
) -> dict[int, dict[str, list[float]]]:
    """J and F per object over frames that are already the scored ones (the official ``[1:-1]``).

    A predicted id above ``num_objects`` in these frames is an error, as in the official code (which never
    reads the first and last results, so ids there do not matter).
    """
    if int(pred_ids.max(initial=0)) > num_objects:
        raise VitoError(f"the results hold object id {int(pred_ids.max())} but the ground truth has {num_objects}")
    scores = {}
    for obj in range(1, num_objects + 1):
        pairs = [(g == obj, p == obj) for g, p in zip(gt_ids, pred_ids)]
        scores[obj] = {"J": [region_similarity(g, p) for g, p in pairs],
                       "F": [boundary_f_measure(g, p) for g, p in pairs]}
    return scores


def summarize(per_sequence: dict[str, dict[int, dict[str, list[float]]]]) -> dict[str, Any]:
    """Global J/F mean, recall, decay over all objects of all sequences (objects weigh equally)."""
    objects = {}
    for name, scores in per_sequence.items():
        for obj, values in scores.items():
            objects[f"{name}_{obj}"] = {m: per_object_statistics(values[m]) for m in ("J", "F")}
    if not objects:
        raise VitoError("no objects to score")
    overall = {}
    for metric in ("J", "F"):
        for stat in ("mean", "recall", "decay"):
            overall[f"{metric}-{stat.capitalize()}"] = float(np.mean([o[metric][stat] for o in objects.values()]))
    overall["J&F-Mean"] = (overall["J-Mean"] + overall["F-Mean"]) / 2
    per_object = {
        key: {"J-Mean": o["J"]["mean"], "F-Mean": o["F"]["mean"], "J&F-Mean": (o["J"]["mean"] + o["F"]["mean"]) / 2}
        for key, o in objects.items()
    }
    return {"global": overall, "per_object": per_object}


def read_result(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A result PNG's object ids, which must be an index map of the annotation's size."""
    if not path.is_file():
        raise DataError(f"missing result {path} (every scored frame needs a prediction)")
    ids, _ = read_png_ids(path)
    if ids.shape != shape:
        raise DataError(f"{path} is {ids.shape[1]}x{ids.shape[0]}, its annotation {shape[1]}x{shape[0]}")
    return ids


def score_results(
    davis_root: str | Path,
    results_dir: str | Path,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    layout: str = "auto",
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Score a results folder against the ground truth, like the official ``evaluation_method.py``.

    As there, only the scored frames (all annotated frames but the first and the last) need a result PNG.
    ``max_frames`` scores only the first frames of each sequence (for quick propagation runs).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"results folder not found: {results_dir}")
    per_sequence, frames_scored, frames_annotated = {}, 0, 0
    for sequence in tqdm(find_sequences(davis_root, resolution, sequences), desc="J&F", unit="seq"):
        annotations = sequence.annotations[:max_frames]
        if len(annotations) < 3:
            raise DataError(f"{sequence.name}: J&F needs 3 or more annotated frames (the first and last are not scored)")
        try:
            gt = np.stack([read_object_ids(p, layout) for p in annotations])
            preds = np.stack([read_result(results_dir / sequence.name / a.name, gt.shape[1:])
                              for a in annotations[1:-1]])
            per_sequence[sequence.name] = evaluate_kept_frames(gt[1:-1], preds, num_objects=int(gt[0].max()))
        except (DataError, VitoError, ValueError) as error:
            raise DataError(f"DAVIS sequence {sequence.name}: {error}") from error
        frames_scored += len(annotations) - 2
        frames_annotated += max(len(sequence.annotations) - 2, 0)
    summary = summarize(per_sequence)
    summary["per_frame"] = {name: {str(o): v for o, v in s.items()} for name, s in per_sequence.items()}
    summary["frames_scored"], summary["frames_annotated"] = frames_scored, frames_annotated
    return summary


# --------------------------------------------------------------------------------------------------
# Label propagation (docs/metrics.md, DAVIS: VFS settings)


@dataclass
class PropagationSettings:
    stage: int = field(default=-2, metadata={"help": "feature stage (-2 = res4 of a ResNet)"})
    stride8: bool = field(default=True, metadata={
        "help": "do not remove that stage's stride (default: removed, VFS test-time strides (1, 2, 1, 1))",
        "cli": {"flag": "--keep-stride", "invert": True}})
    context: int = field(default=20, metadata={"help": "preceding frames used as context, besides the first"})
    topk: int = field(default=10, metadata={"help": "affinities kept per query"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of the affinities"})
    radius: float | None = field(default=18.0, metadata={
        "help": "spatial radius in feature cells (0: none); VFS neighbor_range 36 (strict <), also on frame 0",
        "cli": {"none_at_or_below": 0}})
    short_side: int | None = field(default=480, metadata={
        "help": "resize frames to this short side before encoding (0: native)", "cli": {"none_at_or_below": 0}})
    batch_size: int = field(default=8, metadata={"help": "frames per encoder forward pass"})
    max_frames: int | None = field(default=None, metadata={"help": "only the first N frames of each sequence"})


def propagate_top_k(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    topk: int,
    temperature: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[Q, L]`` soft labels: softmax over each query's top-k affinities ``<q, k> / T`` mixes key labels.

    ``query [Q, C]`` and ``keys [N, C]`` are L2-normalised features, ``values [N, L]`` the keys' labels,
    ``allowed [Q, N]`` optionally excludes keys (the spatial radius). Queries with no allowed key get 0.
    Keys may come in ``G`` groups (``keys [G, N, C]``, ``values [G, N, L]``, e.g. one per context frame) that
    share ``allowed``: the top-k over all groups is taken from each group's own top-k, which spares copying
    the groups into one matrix.
    """
    if keys.dim() == 2:
        keys, values = keys[None], values[None]
    groups, per_group = keys.shape[:2]
    affinity = torch.matmul(query, keys.transpose(1, 2)).div_(temperature)  # [G, Q, N]; in place: the big one
    if allowed is not None:
        affinity.masked_fill_(~allowed, float("-inf"))
    group_value, group_index = affinity.topk(min(topk, per_group), dim=2)  # the overall top-k is among these
    offsets = per_group * torch.arange(groups, device=query.device)[:, None, None]
    candidates = group_value.permute(1, 0, 2).flatten(1)  # [Q, G * k]
    candidate_index = (group_index + offsets).permute(1, 0, 2).flatten(1)
    top_value, pick = candidates.topk(min(topk, candidates.shape[1]), dim=1)
    weights = torch.nan_to_num(top_value.softmax(dim=1), nan=0.0)
    chosen = values.reshape(groups * per_group, -1)[candidate_index.gather(1, pick)]  # [Q, k, L]
    return (weights.unsqueeze(2) * chosen).sum(dim=1)


def _grid(y0: int, y1: int, x0: int, x1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every cell of the box ``[y0, y1) x [x0, x1)``, row-major."""
    ys, xs = torch.meshgrid(torch.arange(y0, y1, device=device), torch.arange(x0, x1, device=device), indexing="ij")
    return ys.flatten(), xs.flatten()


@functools.lru_cache(maxsize=512)
def _within_radius(
    query_box: tuple[int, int, int, int], key_box: tuple[int, int, int, int], radius: float, device: torch.device
) -> torch.Tensor:
    """``[Q, B]``: which key cells lie strictly within ``radius`` of each query cell (VFS ``spatial_neighbor``).

    Cached: every frame of a sequence has the same tiles, so each mask is computed once.
    """
    qy, qx = _grid(*query_box, device)
    ky, kx = _grid(*key_box, device)
    return ((qy[:, None] - ky[None]) ** 2 + (qx[:, None] - kx[None]) ** 2).float().sqrt() < radius


def propagate_frame(
    query: torch.Tensor, context_features: list[torch.Tensor], context_labels: list[torch.Tensor],
    settings: PropagationSettings, tile: int = 16,
) -> torch.Tensor:
    """Soft labels ``[L, h, w]`` of one frame from its context frames (features ``[C, h, w]``, labels ``[L, h, w]``).

    With a radius, queries are processed in ``tile`` x ``tile`` blocks against only the context cells that
    can lie within the radius of the block: the same result as masking all other cells, with several
    times less work at 480p. Without a radius every context cell is a candidate.
    """
    channels, height, width = query.shape
    frames, num_labels = len(context_features), context_labels[0].shape[0]
    keys, labels = torch.stack(context_features), torch.stack(context_labels)  # [G, C, h, w], [G, L, h, w]
    if settings.radius is None:  # whole rows of queries, as many as keep the affinity matrix near 2^25 entries
        reach, tile_h, tile_w = height + width, max(1, 2**25 // (frames * height * width * width)), width
    else:
        reach, tile_h, tile_w = max(math.ceil(settings.radius) - 1, 0), tile, tile  # |dy| < radius
    out = query.new_zeros(num_labels, height, width)
    for y0 in range(0, height, tile_h):
        for x0 in range(0, width, tile_w):
            y1, x1 = min(y0 + tile_h, height), min(x0 + tile_w, width)
            ky0, ky1, kx0, kx1 = max(y0 - reach, 0), min(y1 + reach, height), max(x0 - reach, 0), min(x1 + reach, width)
            queries = query[:, y0:y1, x0:x1].reshape(channels, -1).T
            box_keys = keys[:, :, ky0:ky1, kx0:kx1].reshape(frames, channels, -1).transpose(1, 2)  # [G, B, C]
            box_labels = labels[:, :, ky0:ky1, kx0:kx1].reshape(frames, num_labels, -1).transpose(1, 2)
            allowed = None
            if settings.radius is not None:
                allowed = _within_radius((y0, y1, x0, x1), (ky0, ky1, kx0, kx1), settings.radius, query.device)
            mixed = propagate_top_k(queries, box_keys, box_labels, settings.topk, settings.temperature, allowed)
            out[:, y0:y1, x0:x1] = mixed.T.reshape(num_labels, y1 - y0, x1 - x0)
    return out


def labels_to_ids(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, per-class min-max normalisation (classes with max > 0), argmax (as VFS)."""
    up = F.interpolate(soft[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    low = up.flatten(1).min(dim=1).values[:, None, None]
    high = up.flatten(1).max(dim=1).values[:, None, None]
    up = torch.where(high > 0, (up - low) / (high - low + 1e-12), up)
    return up.argmax(dim=0).to(torch.uint8).cpu().numpy()


def first_frame_labels(ids: np.ndarray, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """One-hot ``[L, h, w]`` of the first frame after nearest-neighbour resizing (PIL, as VFS)."""
    small = np.array(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))
    return F.one_hot(torch.from_numpy(small).long(), num_classes).permute(2, 0, 1).float()


def read_frame(path: Path, short_side: int | None) -> torch.Tensor:
    """A normalised ``[3, H, W]`` frame; resized (bilinear, as mmcv/VFS) when its short side is not ``short_side``."""
    try:
        with bombs_are_errors(), Image.open(path) as frame:
            image = torch.from_numpy(np.array(frame.convert("RGB"))).permute(2, 0, 1).float() / 255
    except (OSError, ValueError, SyntaxError, *BOMBS) as error:
        raise DataError(f"cannot read frame {path}: {error}") from error
    height, width = image.shape[1:]
    if short_side and min(height, width) != short_side:
        scale = short_side / min(height, width)
        size = (int(height * scale + 0.5), int(width * scale + 0.5))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return normalize(image)


def frame_features(encoder: Encoder, frames: Sequence[Path], settings: PropagationSettings) -> Iterator[torch.Tensor]:
    """L2-normalised ``[C, h, w]`` features per frame, computed ``batch_size`` frames at a time."""
    device = next(encoder.parameters()).device
    for start in range(0, len(frames), settings.batch_size):
        batch = [read_frame(p, settings.short_side) for p in frames[start : start + settings.batch_size]]
        batch = torch.stack(batch).to(device)
        with inference_mode(device, encoder.precision):
            maps = encoder.feature_maps(batch, [settings.stage])[0]
        yield from F.normalize(maps.float(), dim=1)


def propagate_features(
    features: Iterable[torch.Tensor], first: np.ndarray, settings: PropagationSettings
) -> list[np.ndarray]:
    """Object ids per frame from L2-normalised ``[C, h, w]`` frame features and the first frame's ids.

    Context of frame t: frame 0 (ground truth) + frames max(0, t-m)..t-1 (their propagated soft labels);
    frame 0 is in both while t <= m, as in VFS.
    """
    num_classes = int(first.max()) + 1
    predictions = [first]
    bank_features: list[torch.Tensor | None] = []
    bank_labels: list[torch.Tensor | None] = []
    for t, frame in enumerate(features):
        if t == 0:
            labels = first_frame_labels(first, tuple(frame.shape[1:]), num_classes).to(frame.device)
        else:
            recent = [0] + list(range(max(0, t - settings.context), t))
            labels = propagate_frame(frame, [bank_features[i] for i in recent], [bank_labels[i] for i in recent],
                                     settings)
            predictions.append(labels_to_ids(labels, first.shape))
        bank_features.append(frame)
        bank_labels.append(labels)
        stale = t - settings.context  # no later frame needs this one (frame 0 is always kept)
        if stale >= 1:
            bank_features[stale] = bank_labels[stale] = None
    return predictions


def propagate_sequence(
    encoder: Encoder, sequence: DavisSequence, settings: PropagationSettings, layout: str = "auto"
) -> list[np.ndarray]:
    """Predicted object ids for every frame of a sequence (the first is the given annotation)."""
    frames = sequence.frames[: settings.max_frames] if settings.max_frames else sequence.frames
    try:
        first = read_object_ids(sequence.annotations[0], layout)
        features = tqdm(frame_features(encoder, frames, settings), total=len(frames), desc=sequence.name,
                        unit="frame", leave=False)
        return propagate_features(features, first, settings)
    except DataError as error:
        raise DataError(f"DAVIS sequence {sequence.name}: {error}") from error


def propagate_davis(
    encoder: Encoder,
    davis_root: str | Path,
    out_dir: str | Path,
    settings: PropagationSettings | None = None,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    layout: str = "auto",
) -> dict[str, Any]:
    """Propagate the first-frame labels of every sequence into ``OUT/results/<seq>/<frame>.png`` and score them."""
    settings = settings or PropagationSettings()
    if settings.stride8:
        encoder.remove_stride(settings.stage)
    results_dir = Path(out_dir) / "results"
    found = find_sequences(davis_root, resolution, sequences)
    frames_done, started = 0, time.perf_counter()
    for sequence in tqdm(found, desc="DAVIS propagation", unit="seq"):
        predictions = propagate_sequence(encoder, sequence, settings, layout)
        for ids, annotation_like in zip(predictions, sequence.frames):
            save_palette_png(results_dir / sequence.name / f"{annotation_like.stem}.png", ids)
        frames_done += len(predictions)
    elapsed = time.perf_counter() - started
    scores = score_results(davis_root, results_dir, [s.name for s in found], resolution, layout, settings.max_frames)
    return {**scores, "frames": frames_done, "frames_per_second": frames_done / elapsed}


GLOBAL_METRICS = {
    "J&F-Mean": ("jf_mean", "proportion"), "J-Mean": ("j_mean", "proportion"),
    "J-Recall": ("j_recall", "proportion"), "J-Decay": ("j_decay", "signed"),
    "F-Mean": ("f_mean", "proportion"), "F-Recall": ("f_recall", "proportion"), "F-Decay": ("f_decay", "signed"),
}


@dataclass
class DavisSettings(PropagationSettings):
    davis_root: Path = field(default=None, metadata={"help": "folder with JPEGImages/ and Annotations/",
                                                     "cli": {"required": True}})
    results: Path | None = field(default=None, metadata={
        "help": "only score this results folder (RESULTS/<seq>/<frame>.png), like the official script"})
    sequences: list[str] | None = field(default=None, metadata={
        "help": "comma-separated sequence names (default: all annotated)", "cli": {"sep": ","}})
    resolution: str = field(default="480p", metadata={"help": "JPEGImages/ and Annotations/ sub-folder"})
    layout: Literal["auto", "2016", "2017"] = field(default="auto", metadata={
        "help": "2016: grey 0/255 single-object masks; 2017: palette ids with 255 = void"})


@register
class Davis(Evaluation):
    name = "davis"
    Settings = DavisSettings
    needs_encoder = "optional"  # --results: score a results folder without an encoder
    group = "video"
    help = "DAVIS video object segmentation by label propagation, scored with J&F"
    description = ("With --encoder: propagate the first-frame masks (VFS settings: res4 at stride 8, first + 20 "
                   "preceding frames, top-10, T=0.07, radius 18) and score them. With --results: only score a "
                   "results folder, like the official evaluation script.")

    def check(self, settings: DavisSettings, has_encoder: bool) -> None:
        if settings.davis_root is None:
            raise VitoError("vito eval davis needs --davis-root DIR")
        if has_encoder == (settings.results is not None):
            raise VitoError("vito eval davis: give --encoder ENC (propagate and score) or --results DIR (score only)")

    def run(self, encoder: Encoder | None, settings: DavisSettings, out_dir: Path) -> Result:
        if encoder is None:
            scores = score_results(settings.davis_root, settings.results, settings.sequences, settings.resolution,
                                   settings.layout)
            extra, artifacts = {"mode": "score"}, {}
        else:
            scores = propagate_davis(encoder, settings.davis_root, out_dir, settings, settings.sequences,
                                     settings.resolution, settings.layout)
            extra = {"mode": "propagate", "frames_per_second": scores["frames_per_second"]}
            artifacts = {"results": "results"}
        metrics = {key: Metric(scores["global"][name], kind, name) for name, (key, kind) in GLOBAL_METRICS.items()}
        note = f"scored frames of {len(scores['per_object'])} objects"
        if settings.max_frames and encoder is not None:
            note += f" (only the first {settings.max_frames} frames of each sequence)"
        coverage = Coverage(scores["frames_scored"], scores["frames_annotated"], note)
        per_object = [{"object": key, **values} for key, values in scores["per_object"].items()]
        return Result(self.name, metrics, extra, coverage, tables={"per object": per_object}, artifacts=artifacts)
