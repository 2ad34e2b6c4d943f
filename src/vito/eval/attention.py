"""Attention pictures (paper Fig. B.1): where VITO's attention pooling looks, per stage and averaged.

Images are shown as the network sees them (the ImageNet evaluation crop); a video contributes a few
frames spread over its length, one row each. The drawing itself is ``vito.viz.attention.save_attention_grid``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vito.data.imagenet import CROP_FRACTION, normalize
from vito.data.images import IMAGE_SUFFIXES, read_image
from vito.data.video import probe_video, read_frames
from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import centre_crop
from vito.io import write_json
from vito.viz.attention import save_attention_grid


def crop_for_display(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` → uint8 ``[3, size, size]``: the centre crop the encoder is shown."""
    return centre_crop(image, size)


def load_pictures(path: Path, size: int, frames_per_video: int) -> list[torch.Tensor]:
    """uint8 ``[3, size, size]`` pictures: the image itself, or frames spread uniformly over a video."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [crop_for_display(read_image(path), size)]
    info = probe_video(path)
    times = (np.arange(frames_per_video) + 0.5) * info.duration / frames_per_video
    frames = read_frames(path, times, short_side=int(round(size / CROP_FRACTION)))
    return [crop_for_display(f.permute(2, 0, 1), size) for f in frames]


def attention_for(encoder: Encoder, pictures: Sequence[torch.Tensor]) -> list[list[np.ndarray]]:
    """``masks[stage][picture]``: ``[h, w]`` attention weights of every pooled stage."""
    device = next(encoder.parameters()).device
    batch = normalize(torch.stack(pictures)).to(device)
    with inference_mode(device, encoder.precision):
        maps = encoder.attention_maps(batch)
    if maps is None and encoder.network is not None:
        raise VitoError(f"{encoder.name} was trained with average pooling (model.attention=false): it has no "
                        "attention maps to draw")
    if maps is None:
        raise VitoError(f"{encoder.name} has no attention pooling: attention pictures need a vito run or checkpoint")
    return [[m.float().cpu().numpy() for m in stage] for stage in maps]


def save_attention_pictures(
    encoder: Encoder, inputs: Sequence[str | Path], out_dir: str | Path, image_size: int = 224,
    frames_per_video: int = 4,
) -> dict[str, Any]:
    """One PNG grid per input (image | stage 1 | ... | mean over stages) in ``out_dir``, plus ``attention.json``."""
    out_dir = Path(out_dir)
    written, skipped = [], []
    for raw in progress(inputs, desc="attention pictures", unit="input"):
        path = Path(raw)
        try:
            pictures = load_pictures(path, image_size, frames_per_video)
        except (DataError, FileNotFoundError) as error:
            skipped.append({"input": str(path), "reason": str(error)})
            continue
        masks = attention_for(encoder, pictures)
        titles = [path.name] if len(pictures) == 1 else [f"{path.name} #{i + 1}" for i in range(len(pictures))]
        target = out_dir / f"{path.stem}_attention.png"
        save_attention_grid([p.permute(1, 2, 0).numpy() for p in pictures], masks, target, titles)
        written.append({"input": str(path), "picture": str(target), "rows": len(pictures),
                        "stage_shapes": [list(stage[0].shape) for stage in masks]})
    if not written:
        raise DataError(f"none of the {len(inputs)} inputs could be read: {skipped}")
    report = {"encoder": encoder.name, "image_size": image_size, "pictures": written, "skipped": skipped}
    write_json(out_dir / "attention.json", report)
    return report
