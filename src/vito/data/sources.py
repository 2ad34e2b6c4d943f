"""Where training clips come from, and the deterministic stream of batches fed to pretraining.

A *source* is anything with the ``ClipSource`` protocol: raw videos (``VideoFolderSource``, from a folder or a
CSV/JSONL manifest) or prepared shards (``vito.data.shards``, chosen when the folder holds ``shards.json``).

Which videos are usable is decided once per run, before training, by a static pre-scan of every raw
video (``cached_scan``: each file opened, checked for truncation and its first frame decoded, split across
processes, cached in the run folder for every resume); shards are usable by construction.

``PretrainBatches`` turns a source into batches whose content for step ``s`` on rank ``r`` is a pure function
of ``(seed, s, r)`` and the pre-scan: which videos (an epoch-wise seeded permutation of the usable videos
split across ranks), the view times and the crops. A clip whose file still fails (only at some times: a
partly corrupt file) is replaced for that slot only, by a rule of ``(seed, step, rank, slot)``, never by
what a worker has met before. Resuming at step ``s`` therefore continues exactly the same data stream, and
the number of DataLoader workers changes nothing. Bad files are reported and counted, never fatal, unless no
video is usable at all.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vito.config import DataConfig
from vito.data.augment import RandomResizedCropFlip
from vito.data.local_files import check_regular_file, file_identity, walk_once
from vito.data.manifest import is_manifest, read_manifest
from vito.data.sampling import sample_times
from vito.data.shards.format import INDEX_NAME, is_shard_folder
from vito.data.stream import EpochShuffle, StepStream
from vito.data.video import VideoReader
from vito.errors import DataError, VitoError
from vito.io import write_json

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
SCAN_NAME = "video_scan.json"  # the pre-scan's answer, kept in the run folder (see cached_scan)
SCAN_FORMAT = "vito-scan/1"
PROBE_SHORT_SIDE = 32  # the pre-scan decodes each video's first frame at this short side (cheap)
REPLACEMENT_STREAM = 1  # extra seed word: replacement draws never reuse the view/crop random stream

TimesFn = Callable[[float], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Finding videos

Skip = tuple[str, str]  # (name, reason) of something left out: a manifest row, a file, a shard


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    line: int | None = None  # line in the manifest that named it (None when found in a folder)


def find_videos(path: str | Path) -> list[VideoEntry]:
    """Video files under a folder (recursive, sorted) or listed in a manifest (.csv / .jsonl with ``path``)."""
    return list_videos(path)[0]


def list_videos(path: str | Path) -> tuple[list[VideoEntry], list[Skip]]:
    """``find_videos`` and what it left out: rows without a path, missing and non-regular files, each with
    its manifest line (warned about here; the training loader also reports them in train.log)."""
    path = Path(path)
    if path.is_dir():
        if is_shard_folder(path):
            raise DataError(f"{path} holds prepared shards, not videos: open it with open_source()")
        entries, skipped = _folder_videos(path)
        if not entries:
            if any(path.glob("shard-*.tar")):
                raise DataError(f"{path}: holds shard files but no {INDEX_NAME} (the shard folder index is "
                                "missing): prepare the shards again with `vito prepare`")
            known = " ".join(sorted(VIDEO_EXTENSIONS))
            raise DataError(f"no video files in {path} (searched recursively for {known})")
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    elif is_manifest(path):
        entries, skipped = _listed(path)
    else:
        raise DataError(f"{path}: expected a folder of videos or a .csv/.jsonl manifest with a 'path' column")
    for _, reason in skipped:
        log.warning("%s, skipped", reason)
    return entries, skipped


def _folder_videos(folder: Path) -> tuple[list[VideoEntry], list[Skip]]:
    """Files with a video extension under ``folder`` (symlinked folders followed, each real folder once:
    ``walk_once``); non-regular files and second names of a file already found are counted skips."""
    found, skipped = [], []
    for file in walk_once(folder):
        if file.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        try:
            check_regular_file(file)
            found.append(file)
        except DataError as error:
            skipped.append((str(file), str(error)))
    first: dict[tuple[int, int], Path] = {}  # a linked file and its target are one video (see _listed)
    for file in sorted(found):
        original = first.setdefault(file_identity(file), file)
        if original != file:
            skipped.append((str(file), f"{file}: the same file as {original}"))
    return [VideoEntry(p) for p in sorted(first.values())], skipped


def _line_of(manifest: Path, line: int) -> str:
    """``manifest.csv line 3``: how the training loader names a manifest line (in errors and counted skips)."""
    return f"{manifest} line {line}"


def _listed(manifest: Path) -> tuple[list[VideoEntry], list[Skip]]:
    """The manifest's videos; empty, missing and non-regular paths are counted skips, and so is a row naming a
    file an earlier row named (by any spelling or link): trained as two videos, its clips would be each
    other's negatives and it would be drawn twice as often. Skips are listed in line order."""
    table = read_manifest(manifest, empty="skip", locate=_line_of)
    entries: list[VideoEntry] = []
    skipped = [(row.line, row.name, row.reason) for row in table.skipped]
    first_line: dict[tuple[int, int], int] = {}  # (device, inode) -> the line that named the file first
    for number, row in table.rows:
        where, file = _line_of(manifest, number), Path(row["path"])
        try:
            check_regular_file(file)
        except DataError as error:
            skipped.append((number, str(file), f"{where}: {error}"))
            continue
        identity = file_identity(file)
        if identity in first_line:
            reason = f"{where}: {file}: duplicate of line {first_line[identity]}"
            skipped.append((number, f"{manifest}:{number}", reason))
            continue
        first_line[identity] = number
        entries.append(VideoEntry(file, number))
    skips = [(name, reason) for _, name, reason in sorted(skipped, key=lambda skip: skip[0])]
    if skips:
        log.warning("%s: %d of %d rows skipped", manifest, len(skips), len(skips) + len(entries))
    if not entries:
        raise DataError(f"{manifest}: lists no existing video file ({len(skips)} rows skipped)")
    return entries, skips


# --------------------------------------------------------------------------------------------------
# Sources


@runtime_checkable
class ClipSource(Protocol):
    """What the batch stream needs from a dataset: a count, a name, and a way to read V frames of a clip.

    A source may also have ``skipped``: ``[(name, reason), ...]`` left out when it was made (manifest rows,
    files, shards), which the training loader reports with the unusable videos.
    """

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        """uint8 [V, H, W, 3]; ``times_fn(duration)`` gives the view times once the duration is known."""
        ...


class VideoFolderSource:
    """Raw video files, decoded with seeking by ``vito.data.video`` (each clip opens its file once)."""

    def __init__(self, entries: Sequence[VideoEntry], skipped: Sequence[Skip] = ()):
        self.entries = list(entries)
        self.skipped = list(skipped)

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
    if is_shard_folder(path):
        from vito.data.shards.reader import ShardSource  # lazy: only shard users pay for its imports

        return ShardSource(path)
    return VideoFolderSource(*list_videos(path))


# --------------------------------------------------------------------------------------------------
# The pre-scan: which videos are usable, decided once per run


def probe_clip(source: ClipSource, i: int) -> str | None:
    """None if clip ``i`` opens, passes the truncation check and decodes its first frame; else the reason."""
    try:
        source.read_clip(i, lambda duration: np.zeros(1), PROBE_SHORT_SIDE)
        return None
    except DataError as exc:
        return str(exc)


def scan_source(source: ClipSource, workers: int = 0, rank: int = 0, world_size: int = 1) -> dict[int, str]:
    """Every clip of the source probed (``probe_clip``): ``{index: reason}`` of the unusable ones.

    Split across ``workers`` processes, and across the ``world_size`` processes of a torch.distributed
    group (each probes every ``world_size``-th clip, then all exchange results), so every process gets the
    same answer. A source with ``usable_by_construction`` (shards) is not probed. DataError when no clip
    is usable.
    """
    if getattr(source, "usable_by_construction", False):
        return {}
    shared = world_size > 1 and dist.is_available() and dist.is_initialized() and dist.get_world_size() == world_size
    mine = list(range(rank, len(source), world_size)) if shared else list(range(len(source)))
    failed = {i: reason for i, reason in zip(mine, _probe_all(source, mine, workers)) if reason is not None}
    if shared:
        parts: list[dict[int, str] | None] = [None] * world_size
        dist.all_gather_object(parts, failed)
        failed = {i: reason for part in parts for i, reason in (part or {}).items()}
    if len(failed) == len(source):
        raise DataError(_no_usable_message(len(source), [failed[i] for i in sorted(failed)]))
    return failed


def _probe_all(source: ClipSource, indices: list[int], workers: int) -> list[str | None]:
    """``probe_clip`` of each index, in ``workers`` processes (a crashing decoder fails the scan, never hangs it)."""
    if workers <= 0 or len(indices) < 2 * workers:
        return [probe_clip(source, i) for i in indices]
    chunk = max(1, min(16, len(indices) // (4 * workers)))
    try:
        with ProcessPoolExecutor(workers, multiprocessing.get_context(), _probe_worker, (source,)) as pool:
            return list(pool.map(_probe_in_worker, indices, chunksize=chunk))
    except BrokenProcessPool:
        raise DataError("a pre-scan worker died while probing the videos (a file crashed the decoder?); "
                        "run with data.num_workers=0 to find it") from None


_WORKER_SOURCE: ClipSource | None = None  # the source a pre-scan worker process probes (set once per process)


def _probe_worker(source: ClipSource) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    _one_thread()


def _probe_in_worker(i: int) -> str | None:
    assert _WORKER_SOURCE is not None
    return probe_clip(_WORKER_SOURCE, i)


def cached_scan(source: ClipSource, cache: Path | None, workers: int = 0, rank: int = 0,
                world_size: int = 1) -> dict[int, str]:
    """``scan_source``, or the answer saved in the run folder ``cache`` (``SCAN_NAME``, see ``save_scan``).

    Why a cache: a resumed run must use the very answer of its first start (a file fixed or broken since
    would otherwise change the batches). It holds for the same list of files; a changed list is scanned
    again (with a warning). Every process of a group takes the same branch.
    """
    names = [source.name(i) for i in range(len(source))]
    failed = _read_scan(cache / SCAN_NAME, names) if cache is not None else None
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        found: list[bool | None] = [None] * world_size
        dist.all_gather_object(found, failed is not None)
        failed = failed if all(found) else None
    if failed is None:
        return scan_source(source, workers, rank, world_size)
    if len(failed) == len(source):
        raise DataError(_no_usable_message(len(source), [failed[i] for i in sorted(failed)]))
    return failed


def save_scan(folder: Path, source: ClipSource, unusable: dict[int, str]) -> None:
    """Keep the pre-scan's answer in the run folder (written once the run owns it: never before)."""
    names = [source.name(i) for i in range(len(source))]
    write_json(folder / SCAN_NAME, {"format": SCAN_FORMAT, "files": names,
                                    "unusable": {str(i): reason for i, reason in sorted(unusable.items())}})


def _read_scan(path: Path, names: list[str]) -> dict[int, str] | None:
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_bytes())
        if saved.get("format") == SCAN_FORMAT and saved.get("files") == names:
            return {int(i): str(reason) for i, reason in saved["unusable"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    log.warning("%s does not describe these %d files: scanning them again", path, len(names))
    return None


def _no_usable_message(total: int, reasons: Sequence[str]) -> str:
    shown = "; ".join(reasons[:5]) + (f"; ... ({len(reasons) - 5} more)" if len(reasons) > 5 else "")
    return f"no usable video among {total} files: {shown}"


# --------------------------------------------------------------------------------------------------
# The batch stream


class PretrainBatches(StepStream):
    """Infinite stream of whole batches for one rank, starting at ``start_step``.

    Use with ``DataLoader(batch_size=None)``; workers split the steps as ``StepStream`` says.
    Batch: ``{"step": int, "views": uint8 [B, V, 3, S, S], "video_index": int64 [B],
    "skipped": [(name, reason), ...]}``: the clips that failed while making this batch, and in the batch of
    ``start_step`` also everything left out before (``skipped``: manifest rows, files and shards, and the
    videos the pre-scan found unusable), so that the training log counts them all.

    ``unusable``: the pre-scan's ``{index: reason}`` (``cached_scan``); those videos are never scheduled.
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
        unusable: dict[int, str] | None = None,
        skipped: Sequence[Skip] = (),
    ):
        if len(source) == 0:
            raise DataError("the data source holds no clips")
        unusable = unusable or {}
        self.usable = np.array([i for i in range(len(source)) if i not in unusable], dtype=np.int64)
        if self.usable.size == 0:
            raise DataError(_no_usable_message(len(source), [unusable[i] for i in sorted(unusable)]))
        self.source, self.data, self.seed = source, data, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.batch_size = batch_size if batch_size is not None else data.batch_size // world_size
        self.crop = RandomResizedCropFlip(data.image_size, scale=(data.crop_min_scale, 1.0))
        self.unusable = dict(unusable)
        self.skipped = list(skipped) + [(source.name(i), unusable[i]) for i in sorted(unusable)]
        self._shuffle = EpochShuffle(seed, len(self.usable) * data.clips_per_video)

    def save_scan(self, folder: Path) -> None:
        """Keep this stream's pre-scan in the run ``folder``, for ``build_pretrain_loader(scan_cache=folder)``."""
        save_scan(folder, self.source, self.unusable)

    # The schedule: pure functions of (seed, step, rank, slot) and the pre-scan

    def video_for(self, step: int, slot: int) -> int:
        """The video at a position of the infinite, epoch-wise shuffled sequence of usable videos, split
        across ranks."""
        position = (step * self.world_size + self.rank) * self.batch_size + slot
        item, _ = self._shuffle(position)
        return int(self.usable[item % len(self.usable)])

    def candidates(self, step: int, slot: int) -> Iterator[int]:
        """The scheduled video, then its replacements should a read fail: every other usable video once,
        from a start drawn from (seed, step, rank, slot). Never what a worker has met before, so the batch
        is the same for any number of workers and after a resume."""
        scheduled = self.video_for(step, slot)
        yield scheduled
        count = len(self.usable)
        first = int(np.random.default_rng([self.seed, step, self.rank, slot, REPLACEMENT_STREAM]).integers(count))
        for k in range(count):
            index = int(self.usable[(first + k) % count])
            if index != scheduled:
                yield index

    def batch(self, step: int) -> dict[str, Any]:
        size = self.data.image_size  # crops are resized straight into one preallocated [B, V, S, S, 3] array
        views = np.empty((self.batch_size, self.data.num_views, size, size, 3), dtype=np.uint8)
        indices = []
        skipped = list(self.skipped) if step == self.start_step else []
        for slot in range(self.batch_size):
            rng = np.random.default_rng([self.seed, step, self.rank, slot])
            index, frames = self._first_readable(step, slot, rng, skipped)
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

    def _first_readable(
        self, step: int, slot: int, rng: np.random.Generator, skipped: list[Skip]
    ) -> tuple[int, torch.Tensor]:
        """Read the scheduled clip, or the first of its ``candidates`` that reads (a file that passed the
        pre-scan may still fail at some times: a partly corrupt file). Each attempt draws the same times
        and crops."""
        d = self.data
        state = rng.bit_generator.state

        def times_fn(duration: float) -> np.ndarray:
            return sample_times(duration, d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng)

        reasons = []
        for index in self.candidates(step, slot):
            rng.bit_generator.state = state
            try:
                return index, self._read(index, times_fn)
            except DataError as exc:
                reasons.append(str(exc))
                skipped.append((self.source.name(index), str(exc)))
                log.debug("skipping %s", exc)
        raise DataError(_no_usable_message(len(self.usable), reasons))


# --------------------------------------------------------------------------------------------------
# Loader and skip accounting


def build_pretrain_loader(
    data_path: str | Path,
    data_cfg: DataConfig,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    scan_cache: Path | None = None,
    batches: type[PretrainBatches] | None = None,
) -> DataLoader:
    """DataLoader of whole per-rank batches (global ``batch_size`` / ``world_size`` clips) from ``start_step``.

    Raw videos are pre-scanned first; ``scan_cache``: the folder of a resumed run, whose saved answer is
    used instead (``cached_scan``). Nothing is written here: the loop saves the answer with
    ``loader.dataset.save_scan(run_dir)`` once the run folder is its own. ``batches`` replaces
    ``PretrainBatches`` (``vito.data.gpu_decode.JpegBatches``: views decoded on the training device).
    """
    if data_cfg.batch_size % world_size:
        raise VitoError(f"data.batch_size={data_cfg.batch_size} is not divisible by the {world_size} processes")
    source = open_source(data_path)
    skipped = list(getattr(source, "skipped", ()))
    if len(source) == 0:
        raise DataError(_no_usable_message(0, [reason for _, reason in skipped]) if skipped
                        else f"{data_path}: holds no clips")
    unusable = cached_scan(source, scan_cache, data_cfg.num_workers, rank, world_size)
    dataset = (batches or PretrainBatches)(source, data_cfg, seed, rank, world_size, start_step,
                                           data_cfg.batch_size // world_size, unusable=unusable, skipped=skipped)
    workers = data_cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def _one_thread(_: int | None = None) -> None:
    """Workers decode and crop in one thread each: K workers already use K cores (OpenCV runs on one thread in
    every process, see vito.data.augment; setting it here, after the fork, is what could deadlock)."""
    torch.set_num_threads(1)


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
