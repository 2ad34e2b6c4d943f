"""Where training clips come from, and the deterministic stream of batches fed to pretraining.

A *source* is anything with the ``ClipSource`` protocol: raw videos (``VideoFolderSource``, from a folder or a
CSV/JSONL manifest) or prepared shards (``vito.data.shards``, chosen when the folder holds ``shards.json``).

``PretrainBatches`` turns a source into batches whose content for step ``s`` on rank ``r`` is a pure function
of ``(seed, s, r)``: which videos (an epoch-wise seeded permutation split across ranks), the view times and
the crops. Resuming at step ``s`` therefore continues exactly the same data stream, and the number of
DataLoader workers changes nothing. Bad videos are replaced by the next usable one and reported, never fatal,
unless no video is usable at all.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vito.config import DataConfig
from vito.data.augment import RandomResizedCropFlip
from vito.data.sampling import sample_times
from vito.data.video import VideoReader
from vito.errors import DataError, VitoError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
SHARDS_INDEX = "shards.json"  # written by ``vito prepare`` (vito.data.shards) into a shard folder

TimesFn = Callable[[float], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Finding videos


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    line: int | None = None  # line in the manifest that named it (None when found in a folder)


def find_videos(path: str | Path) -> list[VideoEntry]:
    """Video files under a folder (recursive, sorted) or listed in a manifest (.csv / .jsonl with ``path``)."""
    path = Path(path)
    if path.is_dir():
        if (path / SHARDS_INDEX).is_file():
            raise DataError(f"{path} holds prepared shards, not videos: open it with open_source()")
        entries = [VideoEntry(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
        if not entries:
            known = " ".join(sorted(VIDEO_EXTENSIONS))
            raise DataError(f"no video files in {path} (searched recursively for {known})")
        return entries
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path)
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise DataError(f"{path}: expected a folder of videos or a .csv/.jsonl manifest with a 'path' column")
    return _existing(path, rows)


def _csv_rows(manifest: Path) -> Iterator[tuple[int, str]]:
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise DataError(f"{manifest}: the CSV header must contain a 'path' column (found {reader.fieldnames})")
        for row in reader:
            if row.get("path"):
                yield reader.line_num, row["path"]


def _jsonl_rows(manifest: Path) -> Iterator[tuple[int, str]]:
    with manifest.open() as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{manifest} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                raise DataError(f"{manifest} line {number}: each line must be a JSON object with a 'path' string")
            yield number, record["path"]


def _existing(manifest: Path, rows: Iterator[tuple[int, str]]) -> list[VideoEntry]:
    """Resolve paths against the manifest's folder; missing files are warned about and counted, not fatal."""
    entries, missing = [], 0
    for number, name in rows:
        file = Path(name).expanduser()
        file = file if file.is_absolute() else manifest.parent / file
        if file.is_file():
            entries.append(VideoEntry(file, number))
        else:
            missing += 1
            log.warning("%s line %d: %s does not exist, skipped", manifest, number, file)
    if missing:
        log.warning("%s: %d of %d listed files are missing", manifest, missing, missing + len(entries))
    if not entries:
        raise DataError(f"{manifest}: lists no existing video file ({missing} missing)")
    return entries


# --------------------------------------------------------------------------------------------------
# Sources


@runtime_checkable
class ClipSource(Protocol):
    """What the batch stream needs from a dataset: a count, a name, and a way to read V frames of a clip."""

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        """uint8 [V, H, W, 3]; ``times_fn(duration)`` gives the view times once the duration is known."""
        ...


class VideoFolderSource:
    """Raw video files, decoded with seeking by ``vito.data.video`` (each clip opens its file once)."""

    def __init__(self, entries: Sequence[VideoEntry]):
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def name(self, i: int) -> str:
        return str(self.entries[i].path)

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        with VideoReader(self.entries[i].path) as reader:
            return reader.frames_at(times_fn(reader.info.duration), short_side)


def open_source(path: str | Path) -> ClipSource:
    """A shard folder (holding ``shards.json``) becomes a ``ShardSource``; anything else is raw video."""
    path = Path(path)
    if path.is_dir() and (path / SHARDS_INDEX).is_file():
        from vito.data.shards import ShardSource  # lazy: only shard users pay for its imports

        return ShardSource(path)
    return VideoFolderSource(find_videos(path))


def check_readable(source: ClipSource, limit: int | None = None) -> int:
    """Index of the first readable clip, trying up to ``limit``; DataError at once when none works."""
    reasons = []
    for i in range(len(source) if limit is None else min(limit, len(source))):
        try:
            source.read_clip(i, lambda duration: np.zeros(1), 32)
            return i
        except DataError as exc:
            reasons.append(str(exc))
    raise DataError(_no_usable_message(len(source), reasons))


def _no_usable_message(total: int, reasons: Sequence[str]) -> str:
    shown = "; ".join(reasons[:5]) + (f"; ... ({len(reasons) - 5} more)" if len(reasons) > 5 else "")
    return f"no usable video among {total} files: {shown}"


# --------------------------------------------------------------------------------------------------
# The batch stream


class PretrainBatches(IterableDataset):
    """Infinite stream of whole batches for one rank, starting at ``start_step``.

    Use with ``DataLoader(batch_size=None)``. Worker ``w`` of ``K`` makes steps ``start_step + w + k*K``, so
    the loader's round-robin order yields steps ``start_step, start_step + 1, ...`` for any ``K``.
    Batch: ``{"step": int, "views": uint8 [B, V, 3, S, S], "video_index": int64 [B],
    "skipped": [(name, reason), ...]}`` (bad videos first met by this worker while making the batch).
    """

    def __init__(
        self,
        source: ClipSource,
        data: DataConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        batch_size: int | None = None,
    ):
        if len(source) == 0:
            raise DataError("the data source holds no clips")
        self.source, self.data, self.seed = source, data, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.batch_size = batch_size if batch_size is not None else data.batch_size // world_size
        self.crop = RandomResizedCropFlip(data.image_size, scale=(data.crop_min_scale, 1.0))
        self._bad: dict[int, str] = {}  # per worker process: videos known to fail, with the reason
        self._orders: dict[int, np.ndarray] = {}  # epoch -> permutation (cache of the last two)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + worker
        while True:
            yield self.batch(step)
            step += workers

    # The schedule: pure functions of (seed, step, rank, slot)

    def video_for(self, step: int, slot: int, offset: int = 0) -> int:
        """The video at a position of the infinite, epoch-wise shuffled sequence split across ranks."""
        epoch_size = len(self.source) * self.data.clips_per_video
        position = (step * self.world_size + self.rank) * self.batch_size + slot + offset
        epoch, within = divmod(position, epoch_size)
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(epoch_size)
        return int(self._orders[epoch][within] % len(self.source))

    def batch(self, step: int) -> dict[str, Any]:
        size = self.data.image_size  # crops are resized straight into one preallocated [B, V, S, S, 3] array
        views = np.empty((self.batch_size, self.data.num_views, size, size, 3), dtype=np.uint8)
        indices, skipped = [], []
        for slot in range(self.batch_size):
            rng = np.random.default_rng([self.seed, step, self.rank, slot])
            index, frames = self._first_usable(step, slot, rng, skipped)
            for frame, out in zip(frames.numpy(), views[slot]):
                self.crop.crop_into(frame, rng, out)
            indices.append(index)
        return {
            "step": step,
            "views": torch.from_numpy(views).permute(0, 1, 4, 2, 3),  # [B, V, 3, S, S], channels-last memory
            "video_index": torch.tensor(indices, dtype=torch.int64),
            "skipped": skipped,
        }

    def _read(self, index: int, times_fn: TimesFn) -> Any:
        """What a slot takes from its clip: decoded frames (``vito.data.gpu_decode`` reads undecoded JPEGs)."""
        return self.source.read_clip(index, times_fn, self.data.decode_short_side)

    def _first_usable(
        self, step: int, slot: int, rng: np.random.Generator, skipped: list[tuple[str, str]]
    ) -> tuple[int, torch.Tensor]:
        """Read the scheduled clip; a bad video is replaced by the next one in the shuffled sequence.

        The replacement and the random draws do not depend on which videos this worker already knows to
        be bad, so batches stay identical for any number of workers.
        """
        d = self.data
        state = rng.bit_generator.state  # each attempt draws the same times and crops

        def times_fn(duration: float) -> np.ndarray:
            return sample_times(duration, d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng)

        for offset in range(len(self.source) * d.clips_per_video):
            index = self.video_for(step, slot, offset)
            if index in self._bad:
                continue
            rng.bit_generator.state = state
            try:
                return index, self._read(index, times_fn)
            except DataError as exc:
                reason = str(exc)
                self._bad[index] = reason
                skipped.append((self.source.name(index), reason))
                log.debug("skipping %s", reason)
            if len(self._bad) == len(self.source):
                break
        raise DataError(_no_usable_message(len(self.source), list(self._bad.values())))


# --------------------------------------------------------------------------------------------------
# Loader and skip accounting


def build_pretrain_loader(
    data_path: str | Path, data_cfg: DataConfig, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0,
    batches: type[PretrainBatches] | None = None,
) -> DataLoader:
    """DataLoader of whole per-rank batches (global ``batch_size`` / ``world_size`` clips) from ``start_step``;
    ``batches`` replaces ``PretrainBatches`` (``vito.data.gpu_decode.JpegBatches``: views decoded on the device)."""
    if data_cfg.batch_size % world_size:
        raise VitoError(f"data.batch_size={data_cfg.batch_size} is not divisible by the {world_size} processes")
    source = open_source(data_path)
    check_readable(source, limit=64)
    dataset = (batches or PretrainBatches)(source, data_cfg, seed, rank, world_size, start_step,
                                           data_cfg.batch_size // world_size)
    workers = data_cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def _one_thread(_: int) -> None:
    """Workers decode and crop in one thread each: K workers already use K cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class SkipCounter:
    """Accumulates ``batch["skipped"]`` in the main process: distinct bad files per reason, each logged once."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # name -> reason

    def update(self, skipped: Sequence[tuple[str, str]]) -> None:
        for name, reason in skipped:
            if name not in self.names:
                self.names[name] = reason
                log.warning("skipping unusable video: %s", reason)

    @property
    def total(self) -> int:
        return len(self.names)

    def by_reason(self) -> dict[str, int]:
        """Counts per kind of failure (the reason text after the file name, e.g. 'empty file (0 bytes)')."""
        return dict(Counter(_kind(name, reason) for name, reason in self.names.items()))


def _kind(name: str, reason: str) -> str:
    text = reason[len(name) + 2 :] if reason.startswith(name + ": ") else reason
    return text.split(" (")[0]
