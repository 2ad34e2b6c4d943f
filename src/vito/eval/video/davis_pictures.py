"""A picture of a DAVIS result: a few frames of the first sequence with the propagated masks over them.

Why: a J&F number says how well masks were propagated, not how they fail (drifting onto the background,
losing a thin part); like the other benchmarks' pictures in ``vito report``, one strip shows it. Top row: the
scored masks over the frames; bottom row: the ground truth, for comparison. Colours are the DAVIS palette's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vito.data.images import read_rgb
from vito.eval.video.davis_data import davis_palette, find_sequences, read_object_ids, read_png_ids
from vito.io import atomic_write

FRAMES_SHOWN = 4
HEIGHT = 120  # pixels of each frame in the strip
GAP = 4
ALPHA = 0.55  # opacity of a mask over its frame


def _overlay(frame: np.ndarray, ids: np.ndarray) -> np.ndarray:
    colours = np.array(davis_palette(), dtype=np.float32).reshape(256, 3)
    mask = ids > 0
    blended = frame.astype(np.float32)
    blended[mask] = (1 - ALPHA) * blended[mask] + ALPHA * colours[ids[mask]]
    return blended.astype(np.uint8)


def _fit(picture: np.ndarray) -> np.ndarray:
    image = Image.fromarray(picture)
    width = max(1, round(image.width * HEIGHT / image.height))
    return np.asarray(image.resize((width, HEIGHT), Image.Resampling.BILINEAR))


def save_propagation_strip(davis_root: Path, results_dir: Path, out_path: Path, sequences: list[str] | None,
                           resolution: str, layout: str) -> str | None:
    """Write the strip of the first sequence that has results; its file name, or None when none has any."""
    for sequence in find_sequences(davis_root, resolution, sequences):
        scored = [(frame, annotation, results_dir / sequence.name / f"{annotation.stem}.png")
                  for frame, annotation in zip(sequence.frames, sequence.annotations)]
        scored = [item for item in scored if item[2].is_file()]
        if not scored:
            continue
        picks = sorted({round(i * (len(scored) - 1) / (FRAMES_SHOWN - 1)) for i in range(FRAMES_SHOWN)})
        top, bottom = [], []
        for index in picks:
            frame_path, annotation, result = scored[index]
            frame = read_rgb(frame_path, "frame")
            predicted, truth = read_png_ids(result)[0], read_object_ids(annotation, layout)
            if predicted.shape != frame.shape[:2] or truth.shape != frame.shape[:2]:
                continue  # a result of another size: scoring reports it; the picture leaves it out
            top.append(_fit(_overlay(frame, predicted)))
            bottom.append(_fit(_overlay(frame, truth)))
        if not top:
            continue
        rows = [_join(top, axis=1), _join(bottom, axis=1)]
        strip = _join(rows, axis=0)
        path = out_path.parent / f"{out_path.stem}_{sequence.name}.png"
        with atomic_write(path, "wb") as handle:
            Image.fromarray(strip).save(handle, format="PNG")
        return path.name
    return None


def _join(parts: list[np.ndarray], axis: int) -> np.ndarray:
    """``parts`` side by side (axis 1) or stacked (axis 0) with white gaps."""
    shape = list(parts[0].shape)
    shape[axis] = GAP
    gap = np.full(shape, 255, dtype=np.uint8)
    joined = [parts[0]]
    for part in parts[1:]:
        joined += [gap, part]
    return np.concatenate(joined, axis=axis)
