"""Prepared training shards: curated videos stored as JPEG frames in tar files, read by direct seeks.

Why this format (measured by benchmarks/bench_shards.py, results/shards.md): a training clip is V frames at
random times, so what counts is the cost of one random frame. On the shared videos (V=3, 224, one thread)
the training loader makes 45-55x the clips/s of raw web video from these JPEG tars, and ~6x what the other
candidate, the same frames re-encoded as short-GOP or all-intra H.264, gives (that one still seeks and
sets up a decoder per clip), for ~2-4x its disk. So ``vito prepare`` decodes each video once at a reduced
frame rate and short side, and stores frame ``k`` (the frame on screen at ``t_k = k / fps``) as one JPEG.

Layout of a shard folder:
- ``shard-000000.tar`` ...: WebDataset-compatible tars (sample key = clip number; members ``KEY.json``
  with the clip's metadata and ``KEY.000000.jpg`` ... its frames), so they can also be streamed;
- ``shard-000000.json`` ...: that shard's index: for every clip its metadata and the byte offset and size
  of every frame inside the tar, so reading one clip touches only its own region of one file;
- ``shards.json``: the format, the settings and the shards with their clip counts (small, read first).

``ShardSource`` follows the ``ClipSource`` protocol of ``vito.data.sources`` (``__len__``, ``name(i)``,
``read_clip(i, times_fn, short_side)``) with the same frame semantics as raw videos: the frame at time
``t`` is the last stored frame with timestamp ``<= t``. Clip indices are global, so the training loader
splits them across ranks and workers exactly as it splits a folder of videos; per-shard indices are
loaded lazily, once per worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vito.checks import finite_number, integer
from vito.data.augment import resize_into
from vito.data.jpeg import decode_jpeg, encode_jpeg, jpeg_size
from vito.data.manifest import read_manifest
from vito.data.video import VideoReader
from vito.errors import DataError, VitoError
from vito.io import atomic_write, write_json

FORMAT = "vito-shards/1"
INDEX_NAME = "shards.json"
# Frames decoded per frames_at call while preparing: bounds memory for long videos (one seek per chunk).
DECODE_CHUNK = 64
# Tar files a reader keeps open (a few per worker: the shards its clips come from).
OPEN_TARS = 16
# Wanted frames at most this many bytes apart are read together (one read across the frames between them).
READ_GAP_BYTES = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSettings:
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


# The most frames per second a shard stores: beyond any camera's rate it only repeats frames, and a typo such as
# --fps 1e9 would otherwise decode for days.
MAX_FPS = 1000.0


def is_shard_folder(path: str | Path) -> bool:
    """True for a folder written by ``write_shards`` (the data sources dispatch on this file name)."""
    return (Path(path) / INDEX_NAME).is_file()


# --------------------------------------------------------------------------------------------------
# Writing


def stored_duration(duration: float, settings: ShardSettings) -> float:
    """How much of a video of ``duration`` seconds is stored (all of it unless ``max_seconds`` cuts it)."""
    return duration if settings.max_seconds is None else min(duration, settings.max_seconds)


def stored_frames(reader: VideoReader, settings: ShardSettings) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames to store: frame ``k`` is the one on screen at ``k / fps``, at the stored short side
    (decoded ``DECODE_CHUNK`` at a time to bound memory on long videos)."""
    duration = stored_duration(reader.info.duration, settings)
    times = np.arange(max(1, math.ceil(duration * settings.fps - 1e-9))) / settings.fps
    for start in range(0, len(times), DECODE_CHUNK):
        yield from reader.frames_at(times[start : start + DECODE_CHUNK], settings.short_side).numpy()


def encode_clip(path: str, settings: ShardSettings) -> tuple[dict[str, Any], list[bytes]]:
    """Decode a video at ``settings.fps`` and short side; return its metadata and the JPEG frames."""
    with VideoReader(path) as reader:
        info = reader.info
        jpegs = [encode_jpeg(frame, settings.quality) for frame in stored_frames(reader, settings)]
    # The source size is kept so that reading at another short side rounds exactly like the video decoder.
    return {"duration": stored_duration(info.duration, settings), "width": info.width, "height": info.height}, jpegs


def _encode_job(job: tuple[str, ShardSettings]) -> tuple[dict[str, Any], list[bytes]] | str:
    """Worker entry: the encoded clip, or the error message of an unreadable video (counted, not fatal)."""
    try:
        return encode_clip(*job)
    except DataError as error:
        return str(error)


def write_shards(manifest: str | Path, out_dir: str | Path, settings: ShardSettings = ShardSettings(),
                 workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Prepare every video of ``manifest`` into shards in ``out_dir``; returns the ``shards.json`` content."""
    out_dir = Path(out_dir)
    if is_shard_folder(out_dir):
        raise VitoError(f"{out_dir} already holds prepared shards; choose another --out")
    rows = [row for _, row in read_manifest(manifest).rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, settings)
    skipped = []
    jobs = [(row["path"], settings) for row in rows]
    with _EncodedClips(jobs, workers) as results, writer.failing_as_error():
        for row, result in tqdm(zip(rows, results), total=len(rows), desc="prepare", unit="video",
                                disable=not progress, dynamic_ncols=True):
            if isinstance(result, str):
                log.warning("skipping unreadable video: %s", result)
                skipped.append({"path": row["path"], "error": result})
                continue
            video, jpegs = result
            writer.add(row, video, jpegs)
        writer.close()
    if writer.num_clips == 0:
        raise DataError(f"{manifest}: no readable video among {len(rows)} ({skipped[0]['error']})")
    index = {
        "format": FORMAT,
        "settings": asdict(settings),
        "num_clips": writer.num_clips,
        "shards": writer.shards,
        "skipped": len(skipped),
        "skipped_videos": skipped,
    }
    write_json(out_dir / INDEX_NAME, index)
    return index


def write_clips(out_dir: str | Path, clips: Iterable[tuple[dict[str, Any], dict[str, Any], list[bytes]]],
                settings: ShardSettings = ShardSettings()) -> dict[str, Any]:
    """Shards of already encoded clips: ``(row, video, jpegs)`` with the manifest row (``path``, optional ``id``
    and ``class``), the video's ``duration``, ``width`` and ``height``, and its JPEG frames at ``settings.fps``
    and short side. For frames that do not come from video files (benchmarks synthesize them)."""
    out_dir = Path(out_dir)
    if is_shard_folder(out_dir):
        raise VitoError(f"{out_dir} already holds prepared shards; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, settings)
    with writer.failing_as_error():
        for row, video, jpegs in clips:
            writer.add(row, video, jpegs)
        writer.close()
    index = {"format": FORMAT, "settings": asdict(settings), "num_clips": writer.num_clips, "shards": writer.shards,
             "skipped": 0, "skipped_videos": []}
    write_json(out_dir / INDEX_NAME, index)
    return index


class _EncodedClips:
    """Encoded clips in manifest order, from this process or a pool of worker processes."""

    def __init__(self, jobs: list[tuple[str, ShardSettings]], workers: int):
        self.jobs, self.workers, self.pool = jobs, workers, None

    def __enter__(self) -> Iterator[tuple[dict[str, Any], list[bytes]] | str]:
        if self.workers <= 0:
            return map(_encode_job, self.jobs)
        self.pool = get_context("spawn").Pool(self.workers)
        return self.pool.imap(_encode_job, self.jobs, chunksize=1)

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()


class _ShardWriter:
    """Appends clips to the current tar; closes it at the size limit and writes its frame index."""

    def __init__(self, out_dir: Path, settings: ShardSettings):
        self.out_dir, self.settings = out_dir, settings
        self.shards: list[dict[str, Any]] = []
        self.num_clips = 0
        self._tar: tarfile.TarFile | None = None
        self._clips: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], video: dict[str, Any], jpegs: list[bytes]) -> None:
        if self._tar is None:
            self._open()
        key = f"{self.num_clips:09d}"
        meta = {
            "key": key, "id": str(row.get("id") or row["path"]), "source": row["path"],
            "class": row.get("class"), **video, "fps": self.settings.fps, "num_frames": len(jpegs),
        }
        self._member(f"{key}.json", json.dumps(meta).encode())
        for k, data in enumerate(jpegs):
            self._member(f"{key}.{k:06d}.jpg", data)
        self._clips.append(meta)
        self.num_clips += 1
        if self._tar.offset >= self.settings.shard_megabytes * 1e6:
            self._close_shard()

    def close(self) -> None:
        if self._tar is not None:
            self._close_shard()

    @contextlib.contextmanager
    def failing_as_error(self) -> Iterator[None]:
        """A failed write (a full disk, a folder gone read-only) becomes one VitoError naming the folder; the
        partial tar is removed. The folder has no ``shards.json`` yet, so nothing reads the shards written so
        far, and preparing again into it starts over."""
        try:
            yield
        except OSError as error:
            if self._tar is not None:
                with contextlib.suppress(OSError):
                    self._tar.close()
                self._tar = None
                self._tmp.unlink(missing_ok=True)
            raise VitoError(f"cannot write shards in {self.out_dir}: {error.strerror or error} (after "
                            f"{self.num_clips} clips; the folder holds no usable shards yet)") from None

    def _open(self) -> None:
        self._name = f"shard-{len(self.shards):06d}"
        self._tmp = self.out_dir / f".{self._name}.tar.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._clips = []

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _close_shard(self) -> None:
        self._tar.close()
        self._tar = None
        offsets = _member_offsets(self._tmp)
        for clip in self._clips:
            names = [f"{clip['key']}.{k:06d}.jpg" for k in range(clip["num_frames"])]
            clip["frames"] = [offsets[name] for name in names]
        tar_path = self.out_dir / f"{self._name}.tar"
        os.replace(self._tmp, tar_path)
        with atomic_write(self.out_dir / f"{self._name}.json") as handle:  # compact: one entry per frame
            json.dump({"tar": tar_path.name, "clips": self._clips}, handle, separators=(",", ":"))
        self.shards.append({"tar": tar_path.name, "index": f"{self._name}.json", "num_clips": len(self._clips)})


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Data offset and size of every member (read back from the tar headers, so always exact)."""
    with tarfile.open(path, "r") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


# --------------------------------------------------------------------------------------------------
# Reading


class ShardSource:
    """Clips of a shard folder, read by direct seeks (the ``ClipSource`` protocol of ``vito.data.sources``)."""

    usable_by_construction = True  # written from videos that decoded; broken shards are left out here

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not is_shard_folder(self.folder):
            raise DataError(f"{self.folder} is not a shard folder (no {INDEX_NAME}; write one with `vito prepare`)")
        header = _read_header(self.folder / INDEX_NAME)
        self.settings = header["settings"]
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
        """uint8 [V, H, W, 3]: the stored frames on screen at ``times_fn(duration)``, decoded into one array."""
        clip = self.clip(i)
        jpegs = self._read_jpegs(clip, times_fn)
        try:
            return torch.from_numpy(self._decode(jpegs, *self._sizes(clip, jpegs, short_side)))
        except ValueError as error:
            raise DataError(f"{self.folder / clip['tar']}: cannot decode clip {clip['key']} ({error})") from None

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
        """The wanted frames' bytes, in the order of the times. A clip's frames lie one after the other in
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


def _read_header(path: Path) -> dict[str, Any]:
    """``shards.json``, checked: a corrupt or foreign file is a DataError naming it, never a traceback."""
    try:
        header = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable shard folder index ({error}); prepare the shards again") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise DataError(f"{path}: unknown format {found!r} (expected {FORMAT})")
    try:
        settings = ShardSettings(**header["settings"])
        shards = [dict(s) for s in header["shards"]]
        if not all(isinstance(s.get("num_clips"), int) for s in shards):
            raise ValueError("a shard without its clip count")
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: corrupt shard folder index ({type(error).__name__}: {error})") from None
    return {"settings": settings, "shards": shards}


def frame_indices(times: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Index of the last stored frame with timestamp ``k / fps <= t`` (clamped to the stored frames)."""
    index = np.floor(np.asarray(times) * fps + 1e-6).astype(np.int64)
    return np.minimum(np.maximum(index, 0), num_frames - 1)  # np.clip's checks cost 10x more on 3 times


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of a ``width x height`` video read at ``short_side``, rounded like ``vito.data.video``."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    """Positional read: no shared file position, so a handle inherited by forked DataLoader workers is safe."""
    data = os.pread(handle.fileno(), size, offset)
    if len(data) != size:
        raise ValueError(f"short read at byte {offset}")
    return data
