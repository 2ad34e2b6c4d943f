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

import csv
import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vito.data.video import VideoReader
from vito.errors import DataError, VitoError
from vito.io import atomic_write, write_json

FORMAT = "vito-shards/1"
INDEX_NAME = "shards.json"
# Frames decoded per frames_at call while preparing: bounds memory for long videos (one seek per chunk).
DECODE_CHUNK = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSettings:
    fps: float = 10.0  # stored frames per second
    short_side: int = 256  # stored short side (pixels)
    quality: int = 90  # JPEG quality
    max_seconds: float | None = None  # store at most the first seconds of each video
    shard_megabytes: float = 512.0  # a shard is closed once it holds this much


def is_shard_folder(path: str | Path) -> bool:
    """True for a folder written by ``write_shards`` (the data sources dispatch on this file name)."""
    return (Path(path) / INDEX_NAME).is_file()


# --------------------------------------------------------------------------------------------------
# Writing


def read_manifest(path: str | Path, required: tuple[str, ...] = ("path",)) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of a CSV or JSONL table whose rows all have ``required`` values; ``path`` is resolved
    against the table's folder.

    One reader for `vito prepare` manifests and `vito curate` candidate files, so that a missing file or
    column, a malformed line or an empty table is a ``DataError`` naming the file and line before any work.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        rows = list(_table_rows(path, required))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    for line, row in rows:
        missing = [key for key in required if not str(row.get(key) or "").strip()]
        if missing:
            raise DataError(f"{path}:{line}: empty {', '.join(missing)}")
        video = Path(str(row["path"]))
        row["path"] = str(video if video.is_absolute() else path.parent / video)
    return rows


def _table_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [key for key in required if key not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column {', '.join(missing)} (header: {reader.fieldnames})")
            for row in reader:
                yield reader.line_num, row
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    yield line, _json_object(text, f"{path}:{line}")
    else:
        raise DataError(f"{path}: expected a .csv or .jsonl file")


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


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
        jpegs = [simplejpeg.encode_jpeg(np.ascontiguousarray(f), settings.quality, "rgb", "420")
                 for f in stored_frames(reader, settings)]
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
    rows = [row for _, row in read_manifest(manifest)]
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, settings)
    skipped = []
    jobs = [(row["path"], settings) for row in rows]
    with _EncodedClips(jobs, workers) as results:
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
        """uint8 [V, H, W, 3]: the stored frames on screen at ``times_fn(duration)``."""
        clip = self.clip(i)
        times = np.asarray(times_fn(float(clip["duration"])), dtype=np.float64).reshape(-1)
        frames = frame_indices(times, clip["fps"], clip["num_frames"])
        path = self.folder / clip["tar"]
        try:
            with open(path, "rb") as handle:
                images = [self._decode(_read_at(handle, *clip["frames"][k]), clip, short_side) for k in frames]
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read clip {clip['key']} ({error})") from None
        return torch.from_numpy(np.stack(images))

    def _decode(self, data: bytes, clip: dict[str, Any], short_side: int | None) -> np.ndarray:
        if short_side is None or short_side == self.settings.short_side:
            return simplejpeg.decode_jpeg(data, "rgb")
        size = output_size(clip["width"], clip["height"], short_side)
        image = simplejpeg.decode_jpeg(data, "rgb", min_height=size[1], min_width=size[0])
        return resize(image, size)


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
    return np.clip(np.floor(np.asarray(times) * fps + 1e-6).astype(np.int64), 0, num_frames - 1)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of a ``width x height`` video read at ``short_side``, rounded like ``vito.data.video``."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of uint8 [H, W, 3] to ``size = (width, height)``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"short read at byte {offset}")
    return data
