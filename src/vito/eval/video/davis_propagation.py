"""DAVIS label propagation with frozen features (VFS protocol; docs/metrics.md, DAVIS).

Every frame is encoded, at a short side of 480 pixels, with a frozen encoder (ResNet res4 at stride 8, VFS
test-time strides (1, 2, 1, 1), no dilation), and the first frame's labels are carried forward by top-k attention
over the first frame and the 20 preceding frames.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vito.engine.progress import progress
from vito.errors import DataError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.video.davis_data import DavisSequence, read_frame, read_object_ids


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
        features = progress(frame_features(encoder, frames, settings), total=len(frames), desc=sequence.name,
                            unit="frame", leave=False)
        return propagate_features(features, first, settings)
    except DataError as error:
        raise DataError(f"DAVIS sequence {sequence.name}: {error}") from error
