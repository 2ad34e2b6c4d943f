"""Where training clips come from: the ``ClipSource`` protocol, and the raw videos of a folder or a manifest.

A *source* is anything with the ``ClipSource`` protocol: raw videos (``VideoFolderSource``, from a folder or a
CSV/JSONL manifest) or prepared shards (``vito.data.shards``, chosen when the folder holds ``shards.json``).
What a listing leaves out (a manifest row without a path, a missing or non-regular file, a second name of a
file already listed) is a counted skip, reported by the training loader; which listed videos decode is the
pre-scan's question (``vito.data.prescan``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from vito.data.local_files import check_regular_file, file_identity, walk_once
from vito.data.manifest import is_manifest, read_manifest
from vito.data.shards.format import INDEX_NAME, is_shard_folder
from vito.data.video import VideoReader
from vito.errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})

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
