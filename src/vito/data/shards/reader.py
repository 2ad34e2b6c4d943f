"""Reading shards: ``ShardSource``, the clips of a shard folder read by direct seeks.

``ShardSource`` follows the ``ClipSource`` protocol of ``vito.data.sources`` (``__len__``, ``name(i)``,
``read_clip(i, times_fn, short_side)``) with the same frame semantics as raw videos: the frame at time
``t`` is the last stored frame with timestamp ``<= t``. Clip indices are global, so the training loader
splits them across ranks and workers exactly as it splits a folder of videos; per-shard indices are
loaded lazily, once per worker.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vito.data.augment import resize_into
from vito.data.jpeg import decode_jpeg, jpeg_size
from vito.data.shards.format import INDEX_NAME, frame_indices, is_shard_folder, read_header
from vito.data.video import output_size
from vito.errors import DataError

# Tar files a reader keeps open (a few per worker: the shards its clips come from).
OPEN_TARS = 16
# Wanted frames at most this many bytes apart are read together (one read across the frames between them).
READ_GAP_BYTES = 64 * 1024

log = logging.getLogger(__name__)


class ShardSource:
    """Clips of a shard folder, read by direct seeks (the ``ClipSource`` protocol of ``vito.data.sources``)."""

    usable_by_construction = True  # written from videos that decoded; broken shards are left out here

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not is_shard_folder(self.folder):
            raise DataError(f"{self.folder} is not a shard folder (no {INDEX_NAME}; write one with `vito prepare`)")
        header = read_header(self.folder / INDEX_NAME)
        self.settings = header["settings"]
        self.media = header["media"]  # "images": clips of one frame, prepared from still images
        self._indices: dict[int, list[dict[str, Any]]] = {}
        self._files: dict[str, Any] = {}  # tar name -> open handle (see ``_file``)
        self._shards: list[dict[str, Any]] = []
        self.skipped: list[tuple[str, str]] = []  # (index file, reason): shards left out, reported by the loader
        for shard in header["shards"]:
            clips = self._shard_clips(shard)
            if isinstance(clips, str):
                self.skipped.append((str(self.folder / str(shard.get("index"))), clips))
                log.warning("skipping shard: %s", clips)
                continue
            self._indices[len(self._shards)] = clips
            self._shards.append(shard)
        self._starts = np.cumsum([0] + [s["num_clips"] for s in self._shards])

    def _shard_clips(self, shard: dict[str, Any]) -> list[dict[str, Any]] | str:
        """The clips of one shard's index, or why the shard is unusable (index or tar missing or corrupt).

        Why check every index here, once: the clip numbering must not change while training, so a shard is
        usable by construction or left out from the start (a counted skip), never found broken by a worker.
        """
        index_file, tar = self.folder / str(shard.get("index")), self.folder / str(shard.get("tar"))
        try:
            clips = json.loads(index_file.read_bytes())["clips"]
        except FileNotFoundError:
            return f"{index_file}: shard index not found"
        except (OSError, ValueError, TypeError, KeyError) as error:
            return f"{index_file}: corrupt shard index ({type(error).__name__}: {error})"
        if not isinstance(clips, list) or len(clips) != shard.get("num_clips"):
            return f"{index_file}: corrupt shard index (expected {shard.get('num_clips')} clips)"
        if not tar.is_file():
            return f"{tar}: shard not found"
        return clips

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_indices"] = {}  # each DataLoader worker loads the shard indices it needs
        state["_files"] = {}  # and opens its own file handles
        return state

    def clip(self, i: int) -> dict[str, Any]:
        """Metadata of clip ``i``: id, source, class, duration, fps, num_frames, frames (offset, size)."""
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range (0..{len(self) - 1})")
        shard = int(np.searchsorted(self._starts, i, side="right") - 1)
        if shard not in self._indices:  # checked when the source was made (see _shard_clips)
            index_file = self.folder / self._shards[shard]["index"]
            self._indices[shard] = json.loads(index_file.read_bytes())["clips"]
        return {**self._indices[shard][i - int(self._starts[shard])], "tar": self._shards[shard]["tar"]}

    def name(self, i: int) -> str:
        return str(self.clip(i)["source"])

    def duration(self, i: int) -> float:
        return float(self.clip(i)["duration"])

    def read_clip(self, i: int, times_fn: Callable[[float], np.ndarray], short_side: int | None = None) -> torch.Tensor:
        """uint8 [V, H, W, 3]: the stored frames on screen at ``times_fn(duration)``, decoded into one array.

        A stored frame that several views show (every view of a still image, views close in time) is decoded
        once: the views are then one array seen V times (read-only use: the crops only read it) or copies."""
        clip = self.clip(i)
        jpegs = self._read_jpegs(clip, times_fn)
        distinct: dict[int, int] = {}  # id of a frame's bytes -> its place among the distinct frames
        places = [distinct.setdefault(id(data), len(distinct)) for data in jpegs]  # one object per stored frame
        unique = [jpegs[places.index(place)] for place in range(len(distinct))]
        try:
            frames = torch.from_numpy(self._decode(unique, *self._sizes(clip, jpegs, short_side)))
        except ValueError as error:
            raise DataError(f"{self.folder / clip['tar']}: cannot decode clip {clip['key']} ({error})") from None
        if len(unique) == 1:
            return frames.expand(len(jpegs), *frames.shape[1:])
        return frames if len(unique) == len(jpegs) else frames[torch.tensor(places)]

    def read_jpegs(self, i: int, times_fn: Callable[[float], np.ndarray],
                   short_side: int | None = None) -> tuple[list[bytes], tuple[int, int]]:
        """The stored JPEG frames on screen at ``times_fn(duration)``, undecoded (for decoding on the training
        device), and the (height, width) ``read_clip`` would give them at ``short_side``. Every frame's header
        is checked, so a damaged frame is a ``DataError`` here, in the worker, like a failed decode."""
        clip = self.clip(i)
        jpegs = self._read_jpegs(clip, times_fn)
        try:
            _, size = self._sizes(clip, jpegs, short_side)
        except ValueError as error:
            raise DataError(f"{self.folder / clip['tar']}: damaged frame in clip {clip['key']} ({error})") from None
        return [bytes(data) for data in jpegs], size

    def _read_jpegs(self, clip: dict[str, Any], times_fn: Callable[[float], np.ndarray]) -> list[memoryview]:
        """The wanted frames' bytes, in the order of the times (a frame wanted twice: the same object twice, read
        once; a still image's V views are one read). A clip's frames lie one after the other in
        its tar, so wanted frames close together (``READ_GAP_BYTES``) are read with one read; farther apart,
        each gets its own: a 2.56 s window at 10 fps spans ~25 stored frames, of which a clip wants 3, and
        reading the whole span would move ~8x the bytes (bandwidth a network file system does not have)."""
        times = np.asarray(times_fn(float(clip["duration"])), dtype=np.float64).reshape(-1)
        spans = [tuple(clip["frames"][k]) for k in frame_indices(times, clip["fps"], clip["num_frames"])]
        handle, views = self._file(clip["tar"]), {}
        try:
            for start, end in _read_runs(spans):
                data = memoryview(_read_at(handle, start, end - start))
                views.update({(o, s): data[o - start : o - start + s] for o, s in spans if start <= o < end})
        except (OSError, ValueError) as error:
            raise DataError(f"{self.folder / clip['tar']}: cannot read clip {clip['key']} ({error})") from None
        return [views[span] for span in spans]

    def _file(self, tar: str) -> Any:
        """An open handle on a tar of this folder; the last ``OPEN_TARS`` stay open (a worker reads many clips
        of the same shards, and opening a file per clip costs about as much as reading it). Reads go through
        ``_read_at`` (``os.pread``), since forked workers share these handles' file positions."""
        handle = self._files.pop(tar, None)
        if handle is None:
            handle = open(self.folder / tar, "rb")
            if len(self._files) >= OPEN_TARS:
                self._files.pop(next(iter(self._files))).close()
        self._files[tar] = handle  # most recently used last
        return handle

    def _sizes(self, clip: dict[str, Any], jpegs: list[memoryview],
               short_side: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
        """(height, width) of the stored frames, checked in every header (a clip's frames share one size), and
        at ``short_side``; ``ValueError`` for a damaged frame."""
        sizes = {jpeg_size(data) for data in jpegs}
        if len(sizes) > 1:
            raise ValueError(f"frames of different sizes {sorted(sizes)}")
        ((height, width),) = sizes
        if short_side is None or short_side == self.settings.short_side:
            return (height, width), (height, width)
        width_out, height_out = output_size(clip["width"], clip["height"], short_side)
        return (height, width), (height_out, width_out)

    @staticmethod
    def _decode(jpegs: list[memoryview], stored: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Decode straight into one [V, H, W, 3] array; at another size than stored, decode at the nearest
        larger DCT scale and resize each frame into it."""
        frames = np.empty((len(jpegs), *size, 3), dtype=np.uint8)
        for data, out in zip(jpegs, frames):
            if size != stored:
                resize_into(decode_jpeg(data, min_size=size), out)
            else:
                decode_jpeg(data, out=out)
        return frames


def _read_runs(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) byte ranges that cover the (offset, size) spans, merging spans at most READ_GAP_BYTES apart."""
    runs: list[list[int]] = []
    for offset, size in sorted(set(spans)):
        if runs and offset - runs[-1][1] <= READ_GAP_BYTES:
            runs[-1][1] = max(runs[-1][1], offset + size)
        else:
            runs.append([offset, offset + size])
    return [(start, end) for start, end in runs]


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    """Positional read: no shared file position, so a handle inherited by forked DataLoader workers is safe."""
    data = os.pread(handle.fileno(), size, offset)
    if len(data) != size:
        raise ValueError(f"short read at byte {offset}")
    return data
