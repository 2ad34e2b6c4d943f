"""The loader's original per-frame path, recomputed from a shard's stored JPEG bytes: DCT-scaled decode, torch's
antialiased bilinear resize, the tensor crop of each view. The CPU path (test_fast_path.py) and the device path
(test_fast_path_device.py) are both compared with it."""

from __future__ import annotations

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F

from vito.data.pretrain_batches import PretrainBatches
from vito.data.sampling import sample_times
from vito.data.shards.format import frame_indices
from vito.data.video import output_size


def old_decode(data: bytes, clip: dict, short_side: int, stored_short_side: int) -> np.ndarray:
    """The original ``ShardSource._decode``: DCT-scaled decode, then torch's antialiased bilinear resize."""
    if short_side == stored_short_side:
        return simplejpeg.decode_jpeg(data, "rgb")
    width, height = output_size(clip["width"], clip["height"], short_side)
    image = simplejpeg.decode_jpeg(data, "rgb", min_height=height, min_width=width)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def old_batch(loader: PretrainBatches, step: int) -> torch.Tensor:
    """uint8 [B, V, 3, S, S] as the original path made it (a source without bad clips: no replacements)."""
    d, source = loader.data, loader.source
    views = []
    for slot in range(loader.batch_size):
        rng = np.random.default_rng([loader.seed, step, loader.rank, slot])
        clip = source.clip(loader.video_for(step, slot))
        times = sample_times(clip["duration"], d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng)
        crops = []
        with open(source.folder / clip["tar"], "rb") as handle:
            for k in frame_indices(times, clip["fps"], clip["num_frames"]):
                offset, size = clip["frames"][k]
                handle.seek(offset)
                frame = old_decode(handle.read(size), clip, d.decode_short_side, source.settings.short_side)
                crops.append(loader.crop(torch.from_numpy(frame).permute(2, 0, 1), rng))  # the tensor path
        views.append(torch.stack(crops))
    return torch.stack(views)
