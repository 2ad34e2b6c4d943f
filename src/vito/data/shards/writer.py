"""Writing shards (``vito prepare``): each video of a manifest decoded once at the stored frame rate and short
side, its frames encoded as JPEGs and appended to the current tar, the tar closed at the size limit with its
frame index, and ``shards.json`` written last (a folder without it holds no usable shards).

A manifest of still images (``vito.data.sources.media_of``: named .jpg, .png, .webp, ...) is prepared the same
way, each image a clip of one frame (duration 0) at the stored short side, and the folder marked
``media: images``; a manifest naming both kinds is refused before anything is written.

Unreadable videos are counted skips, listed in ``shards.json``; a failed write (a full disk) is one error and
leaves no partial tar. Videos are decoded in worker processes with ``--workers``, but written in manifest
order, so the shards are byte-identical for any number of workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from vito.data.jpeg import encode_jpeg
from vito.data.manifest import read_manifest
from vito.data.shards.format import FORMAT, INDEX_NAME, ShardSettings, is_shard_folder
from vito.data.sources import list_source, media_of, mixed_media_error, still_frame
from vito.data.video import VideoReader
from vito.engine.progress import progress as progress_of
from vito.errors import DataError, VitoError
from vito.io import atomic_write, write_json

# Frames decoded per frames_at call while preparing: bounds memory for long videos (one seek per chunk).
DECODE_CHUNK = 64

log = logging.getLogger(__name__)


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


def encode_image(path: str, settings: ShardSettings) -> tuple[dict[str, Any], list[bytes]]:
    """A still image as a clip of one frame: its metadata (duration 0, the file's size) and the frame as a
    JPEG at the stored short side (read and resized as the image source reads it: ``still_frame``)."""
    frame, (width, height) = still_frame(path, settings.short_side)
    return {"duration": 0.0, "width": width, "height": height}, [encode_jpeg(frame, settings.quality)]


Job = tuple[str, ShardSettings, str]  # (path, settings, media)


def _encode_job(job: Job) -> tuple[dict[str, Any], list[bytes]] | str:
    """Worker entry: the encoded clip, or the error message of an unreadable file (counted, not fatal)."""
    path, settings, media = job
    try:
        return encode_image(path, settings) if media == "images" else encode_clip(path, settings)
    except DataError as error:
        return str(error)


def write_shards(manifest: str | Path, out_dir: str | Path, settings: ShardSettings = ShardSettings(),
                 workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Prepare every video (or every image) of ``manifest`` (or of a folder, as the training loader lists it:
    ``list_source``) into shards in ``out_dir``; returns the ``shards.json`` content."""
    out_dir = _new_folder(out_dir)
    rows, media, skipped = _to_prepare(Path(manifest))
    writer = _ShardWriter(out_dir, settings, media)
    jobs = [(row["path"], settings, media) for row in rows]
    unit = media[:-1]
    with _EncodedClips(jobs, workers) as results, writer.failing_as_error():
        for row, result in progress_of(zip(rows, results), total=len(rows), desc="prepare", unit=unit,
                                       enabled=progress):
            if isinstance(result, str):
                log.warning("skipping unreadable %s: %s", unit, result)
                skipped.append({"path": row["path"], "error": result})
                continue
            video, jpegs = result
            writer.add(row, video, jpegs)
        writer.close()
    if writer.num_clips == 0:
        raise DataError(f"{manifest}: no readable {unit} among {len(rows)} ({skipped[0]['error']})")
    return writer.write_index(skipped)


def _to_prepare(manifest: Path) -> tuple[list[dict[str, Any]], str, list[dict[str, str]]]:
    """The rows to prepare, their media and what the listing left out (a folder's non-regular files and second
    names). A manifest's rows are "images" when every one names an image file, "videos" when none does; both
    is an error, like a folder holding both (before anything is written)."""
    if manifest.is_dir():
        listing = list_source(manifest)
        skipped = [{"path": name, "error": reason} for name, reason in listing.skipped]
        return [{"path": str(entry.path)} for entry in listing.entries], listing.media, skipped
    rows = [row for _, row in read_manifest(manifest).rows]
    images = sum(media_of(row["path"]) == "images" for row in rows)
    if 0 < images < len(rows):
        raise mixed_media_error(manifest, len(rows) - images, images)
    return rows, "images" if images else "videos", []


def write_clips(out_dir: str | Path, clips: Iterable[tuple[dict[str, Any], dict[str, Any], list[bytes]]],
                settings: ShardSettings = ShardSettings(), media: str = "videos") -> dict[str, Any]:
    """Shards of already encoded clips: ``(row, video, jpegs)`` with the manifest row (``path``, optional ``id``
    and ``class``), the video's ``duration``, ``width`` and ``height``, and its JPEG frames at ``settings.fps``
    and short side. For frames that do not come from video files (benchmarks synthesize them)."""
    writer = _ShardWriter(_new_folder(out_dir), settings, media)
    with writer.failing_as_error():
        for row, video, jpegs in clips:
            writer.add(row, video, jpegs)
        writer.close()
    return writer.write_index([])


def _new_folder(out_dir: str | Path) -> Path:
    """``out_dir``, refused if it already holds prepared shards (checked before anything is read or written)."""
    out_dir = Path(out_dir)
    if is_shard_folder(out_dir):
        raise VitoError(f"{out_dir} already holds prepared shards; choose another --out")
    return out_dir


class _EncodedClips:
    """Encoded clips in manifest order, from this process or a pool of worker processes."""

    def __init__(self, jobs: list[Job], workers: int):
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

    def __init__(self, out_dir: Path, settings: ShardSettings, media: str):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.settings, self.media = out_dir, settings, media
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

    def write_index(self, skipped: list[dict[str, str]]) -> dict[str, Any]:
        """Write ``shards.json`` (last: until then the folder holds no usable shards) and return its content."""
        index = {"format": FORMAT, "media": self.media, "settings": asdict(self.settings),
                 "num_clips": self.num_clips, "shards": self.shards, "skipped": len(skipped),
                 "skipped_videos": skipped}
        write_json(self.out_dir / INDEX_NAME, index)
        return index

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
