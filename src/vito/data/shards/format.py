"""What a shard folder is: its format name and folder index (``shards.json``), the settings it was prepared with,
what it holds (videos or still images), and which stored frame is on screen at a time. The writer and the reader
share these; nothing here decodes.

Versions: ``vito-shards/2`` added ``media`` ("videos" or "images": a folder prepared from still images holds
clips of one frame, which temporal sampling must not be used on). The reader reads every version it knows
(``READABLE_FORMATS``; a ``vito-shards/1`` folder holds videos); a reader older than a folder's version
refuses it by name rather than misread it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vito.checks import finite_number, integer
from vito.errors import DataError, VitoError

FORMAT = "vito-shards/2"
READABLE_FORMATS = ("vito-shards/1", FORMAT)  # versions this reader reads (see the module's docstring)
INDEX_NAME = "shards.json"
MEDIA = ("videos", "images")

# The most frames per second a shard stores: beyond any camera's rate it only repeats frames, and a typo such as
# --fps 1e9 would otherwise decode for days.
MAX_FPS = 1000.0


@dataclass(frozen=True)
class ShardSettings:
    """How ``vito prepare`` stores videos; checked on creation, so a bad value never reaches the encoder."""

    fps: float = 10.0  # stored frames per second
    short_side: int = 256  # stored short side (pixels)
    quality: int = 90  # JPEG quality
    max_seconds: float | None = None  # store at most the first seconds of each video
    shard_megabytes: float = 512.0  # a shard is closed once it holds this much

    def __post_init__(self) -> None:
        """Refuse values that would crash deep in the encoder (fps 0 or NaN, quality 500) or store nonsense (a
        negative duration, 0-px frames, an fps so high that preparing never ends), naming the setting."""
        checks = [
            ("fps", finite_number(self.fps) and 0 < self.fps <= MAX_FPS,
             f"a number of frames per second in (0, {MAX_FPS:g}]"),
            ("short_side", integer(self.short_side) and self.short_side >= 1, "a whole number of pixels >= 1"),
            ("quality", integer(self.quality) and 1 <= self.quality <= 100, "a whole number in 1..100"),
            ("max_seconds", self.max_seconds is None or (finite_number(self.max_seconds) and self.max_seconds > 0),
             "> 0"),
            ("shard_megabytes", finite_number(self.shard_megabytes) and self.shard_megabytes > 0, "> 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise VitoError(f"shard setting {name} must be {expected}, got {getattr(self, name)!r}")


def is_shard_folder(path: str | Path) -> bool:
    """True for a folder written by ``write_shards`` (the data sources dispatch on this file name)."""
    return (Path(path) / INDEX_NAME).is_file()


def read_header(path: Path) -> dict[str, Any]:
    """``shards.json``, checked: a corrupt or foreign file is a DataError naming it, never a traceback."""
    try:
        header = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable shard folder index ({error}); prepare the shards again") from None
    if not isinstance(header, dict) or header.get("format") not in READABLE_FORMATS:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise DataError(f"{path}: unknown format {found!r} (expected {' or '.join(READABLE_FORMATS)}; a newer "
                        "vito may have written it)")
    try:
        settings = ShardSettings(**header["settings"])
        shards = [dict(s) for s in header["shards"]]
        if not all(isinstance(s.get("num_clips"), int) for s in shards):
            raise ValueError("a shard without its clip count")
        media = header["media"] if header["format"] == FORMAT else "videos"
        if media not in MEDIA:
            raise ValueError(f"media {media!r} is none of {', '.join(MEDIA)}")
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: corrupt shard folder index ({type(error).__name__}: {error})") from None
    return {"settings": settings, "shards": shards, "media": media}


def frame_indices(times: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Index of the last stored frame with timestamp ``k / fps <= t`` (clamped to the stored frames)."""
    index = np.floor(np.asarray(times) * fps + 1e-6).astype(np.int64)
    return np.minimum(np.maximum(index, 0), num_frames - 1)  # np.clip's checks cost 10x more on 3 times
