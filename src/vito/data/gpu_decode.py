"""Training views decoded and cropped on the training device (``data.decode_device``).

Why: from shards, a loader worker spends most of its CPU decoding JPEGs and resizing crops
(benchmarks/results/loader_cost.md); a GPU consuming a thousand clips/s would need many cores for that
alone. With ``decode_device=cuda`` the workers only read each view's stored JPEG, check its header (a
damaged frame is still a counted skip, replaced like any unusable clip) and draw the random parameters
(view times, crop box, flip) exactly as the CPU path draws them. The main process then decodes the batch
with nvJPEG (``torchvision.io.decode_jpeg`` on a list, one batched call) and crops, resizes and flips
there, before the photometric augmentation, which already runs on the device.

The same functions run on CPU tensors (torchvision's libjpeg-turbo decoder), which is how CI tests them.
Numerically the device path is the original per-frame path (torchvision's antialiased ``resized_crop``);
it differs from the CPU path's OpenCV resize by under 2/255 per view (docs/data_path.md).

``data_path_version`` names the path that made a run's batches; checkpoints store it, and a resume with
another one is reported (the batches then differ by that resize, not in content).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg

from vito.data.pretrain_batches import PretrainBatches
from vito.data.shards.format import is_shard_folder
from vito.data.sources import TimesFn
from vito.errors import VitoError

log = logging.getLogger(__name__)

# What made a run's batches: the CPU path's crops (OpenCV, one resize per crop), or the device path's.
# Version 1 (no entry in old checkpoints) was the per-frame torchvision CPU path.
DATA_PATH_VERSIONS = {"cpu": "cpu-opencv/3", "cuda": "device-torchvision/1"}


def data_path_version(decode_device: str) -> str:
    """The version string stored in checkpoints for a resolved ``decode_device`` (``cpu`` or ``cuda``)."""
    return DATA_PATH_VERSIONS[decode_device]


def resolve_decode_device(setting: str, device: torch.device, data: Any) -> str:
    """``cpu`` or ``cuda`` for ``data.decode_device``: ``auto`` decodes on the device when training on CUDA
    from shards; ``cuda`` without both is a ``VitoError`` naming the key."""
    possible = device.type == "cuda" and is_shard_folder(data)
    if setting == "auto":
        return "cuda" if possible else "cpu"
    if setting == "cuda" and not possible:
        needs = "train.device cuda" if device.type != "cuda" else f"prepared shards (vito prepare), not {data}"
        raise VitoError(f"data.decode_device=cuda needs {needs}; use data.decode_device=cpu or auto")
    return setting


class JpegBatches(PretrainBatches):
    """The batch stream of ``PretrainBatches`` with views left undecoded: for step ``s`` the same clips
    (replacements included), view times, boxes and flips, as a function of ``(seed, s, rank)``.

    Batch: ``{"step", "video_index", "skipped"}`` as ``PretrainBatches``, and per view (B*V, clip-major):
    ``"jpegs"`` uint8 [total bytes] (all JPEGs back to back: one tensor to pass between processes),
    ``"jpeg_lengths"`` int64 [N], ``"frame_sizes"`` int64 [N, 2] (height, width at ``decode_short_side``),
    ``"boxes"`` int64 [N, 4] (top, left, height, width), ``"flips"`` bool [N].
    """

    def __init__(self, source: Any, *args: Any, **kwargs: Any):
        if not hasattr(source, "read_jpegs"):
            raise VitoError("data.decode_device=cuda reads prepared shards (vito prepare), not raw videos")
        super().__init__(source, *args, **kwargs)

    def _read(self, index: int, times_fn: TimesFn) -> tuple[list[bytes], tuple[int, int]]:
        return self.source.read_jpegs(index, times_fn, self.data.decode_short_side)

    def batch(self, step: int) -> dict[str, Any]:
        jpegs: list[bytes] = []
        sizes, boxes, flips, indices = [], [], [], []
        skipped = list(self.skipped) if step == self.start_step else []  # as PretrainBatches.batch reports them
        for slot in range(self.batch_size):
            rng = np.random.default_rng([self.seed, step, self.rank, slot])
            index, (frames, size) = self._first_readable(step, slot, rng, skipped)
            for data in frames:  # the CPU path's draws, in its order: per frame a box, then a flip
                box, flip = self.crop.sample(*size, rng)
                jpegs.append(data)
                sizes.append(size)
                boxes.append(box)
                flips.append(flip)
            indices.append(index)
        return {
            "step": step,
            "jpegs": torch.from_numpy(np.frombuffer(b"".join(jpegs), dtype=np.uint8).copy()),
            "jpeg_lengths": torch.tensor([len(data) for data in jpegs], dtype=torch.int64),
            "frame_sizes": torch.tensor(sizes, dtype=torch.int64),
            "boxes": torch.tensor(boxes, dtype=torch.int64),
            "flips": torch.tensor(flips, dtype=torch.bool),
            "video_index": torch.tensor(indices, dtype=torch.int64),
            "skipped": skipped,
        }


def decode_views(batch: dict[str, Any], size: int, device: torch.device | str) -> torch.Tensor:
    """uint8 [B, V, 3, size, size] on ``device`` from a ``JpegBatches`` batch: one batched decode (nvJPEG on
    CUDA), then per view the frame at its ``decode_short_side`` size, its box resized (antialiased) and its flip."""
    lengths = batch["jpeg_lengths"].tolist()
    images = decode_jpeg(list(torch.split(batch["jpegs"], lengths)), mode=ImageReadMode.RGB, device=device)
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    for n, (image, frame, box) in enumerate(zip(images, batch["frame_sizes"].tolist(), batch["boxes"].tolist())):
        if list(image.shape[-2:]) != frame:  # read at another short side than stored
            image = TF.resize(image, frame, antialias=True)
        out[n] = TF.resized_crop(image, *box, [size, size], antialias=True)
    flips = batch["flips"].to(device, non_blocking=True)[:, None, None, None]
    out = torch.where(flips, out.flip(-1), out)
    return out.unflatten(0, (len(batch["video_index"]), -1))
