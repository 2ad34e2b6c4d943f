"""Where training clips come from: the ``ClipSource`` protocol, and the raw videos or still images of a folder
or a manifest.

A *source* is anything with the ``ClipSource`` protocol: raw videos (``VideoFolderSource``), still images
(``ImageFolderSource``), each from a folder or a CSV/JSONL manifest, or prepared shards of either
(``vito.data.shards``, chosen when the folder holds ``shards.json``). A still image is a "video" of one frame:
every view of its clip is cut from that frame, so image pretraining (the paper's MoCLR-on-ImageNet baseline)
runs through the same batches, pre-scan, skips and resume as video pretraining. A source's ``media`` says
which it holds ("videos" or "images"); one holding both is refused (``mixed_media_error``).

What a listing leaves out (a manifest row without a path, a missing or non-regular file, a second name of a
file already listed) is a counted skip, reported by the training loader; which listed files decode is the
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

from vito.data.augment import resize_into
from vito.data.images import IMAGE_SUFFIXES, read_rgb, read_rgb_and_size
from vito.data.local_files import check_regular_file, file_identity, walk_once
from vito.data.manifest import is_manifest, read_manifest
from vito.data.shards.format import INDEX_NAME, is_shard_folder
from vito.data.video import VideoReader, output_size
from vito.errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES)  # the image files of every reader (vito.data.images)

TimesFn = Callable[[float], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Finding videos and images

Skip = tuple[str, str]  # (name, reason) of something left out: a manifest row, a file, a shard


@dataclass(frozen=True)
class VideoEntry:
    """A listed file (a video, or a still image in an image source) and where it was listed."""

    path: Path
    line: int | None = None  # line in the manifest that named it (None when found in a folder)
    manifest: Path | None = None  # the manifest of that line


@dataclass(frozen=True)
class Listing:
    """What a folder or manifest lists: its ``media`` ("videos" or "images"), the files, and what was left out."""

    media: str
    entries: list[VideoEntry]
    skipped: list[Skip]


def media_of(path: str | Path) -> str:
    """"images" for a file named as an image (``IMAGE_EXTENSIONS``, any case), else "videos": how a manifest row
    is read (a folder's files are read by their extension, and files of neither kind are not listed)."""
    return "images" if Path(path).suffix.lower() in IMAGE_EXTENSIONS else "videos"


def mixed_media_error(where: str | Path, videos: int, images: int) -> DataError:
    """The one refusal of a source holding both kinds, naming how many of each."""
    return DataError(f"{where} holds {videos} video file(s) and {images} image file(s): pretraining on videos and "
                     "still images together is not supported yet; train on a folder or manifest of one kind")


def find_videos(path: str | Path) -> list[VideoEntry]:
    """Video files under a folder (recursive, sorted) or listed in a manifest (.csv / .jsonl with ``path``)."""
    return list_videos(path)[0]


def list_videos(path: str | Path) -> tuple[list[VideoEntry], list[Skip]]:
    """``find_videos`` and what it left out: rows without a path, missing and non-regular files, each with
    its manifest line (warned about here; the training loader also reports them in train.log)."""
    listing = list_source(path)
    if listing.media != "videos":
        raise DataError(f"{path} holds {len(listing.entries)} still image(s), no video files")
    return listing.entries, listing.skipped


def list_source(path: str | Path) -> Listing:
    """The videos or the images of a folder (searched recursively, sorted) or of a manifest (.csv / .jsonl
    with ``path``), and what was left out (warned about here; the training loader reports them in train.log).
    A folder or manifest with both kinds, none, or a single file given instead are ``DataError``s."""
    path = Path(path)
    if path.is_dir():
        if is_shard_folder(path):
            raise DataError(f"{path} holds prepared shards, not videos: open it with open_source()")
        listing = _folder_files(path)
        if not listing.entries:
            if any(path.glob("shard-*.tar")):
                raise DataError(f"{path}: holds shard files but no {INDEX_NAME} (the shard folder index is "
                                "missing): prepare the shards again with `vito prepare`")
            videos, images = " ".join(sorted(VIDEO_EXTENSIONS)), " ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"no video files and no image files in {path} (searched recursively for {videos} "
                            f"and {images}, any case)")
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    elif is_manifest(path):
        listing = _listed(path)
    else:
        suffix = path.suffix.lower()
        kind = "an image" if suffix in IMAGE_EXTENSIONS else "a video" if suffix in VIDEO_EXTENSIONS else "a file"
        raise DataError(f"{path}: {kind}, not a folder or a manifest; expected a folder of videos or images, a "
                        ".csv/.jsonl manifest with a 'path' column, or a folder of shards from `vito prepare`")
    for _, reason in listing.skipped:
        log.warning("%s, skipped", reason)
    return listing


def _folder_files(folder: Path) -> Listing:
    """Files with a video or an image extension under ``folder`` (symlinked folders followed, each real folder
    once: ``walk_once``), of one kind (both: ``mixed_media_error``); non-regular files and second names of a
    file already found are counted skips."""
    named: dict[str, list[Path]] = {"videos": [], "images": []}
    for file in walk_once(folder):
        suffix = file.suffix.lower()
        if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
            named[media_of(file)].append(file)
    if named["videos"] and named["images"]:
        raise mixed_media_error(folder, len(named["videos"]), len(named["images"]))
    media = "images" if named["images"] else "videos"
    found, skipped = [], []
    for file in named[media]:
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
    return Listing(media, [VideoEntry(p) for p in sorted(first.values())], skipped)


def _line_of(manifest: Path, line: int) -> str:
    """``manifest.csv line 3``: how the training loader names a manifest line (in errors and counted skips)."""
    return f"{manifest} line {line}"


def _listed(manifest: Path) -> Listing:
    """The manifest's videos or images (by ``media_of``; both: ``mixed_media_error``); empty, missing and
    non-regular paths are counted skips, and so is a row naming a file an earlier row named (by any spelling
    or link): trained as two videos, its clips would be each other's negatives and it would be drawn twice
    as often. Skips are listed in line order."""
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
        entries.append(VideoEntry(file, number, manifest))
    skips = [(name, reason) for _, name, reason in sorted(skipped, key=lambda skip: skip[0])]
    if skips:
        log.warning("%s: %d of %d rows skipped", manifest, len(skips), len(skips) + len(entries))
    if not entries:
        raise DataError(f"{manifest}: lists no existing video or image file ({len(skips)} rows skipped)")
    images = sum(media_of(entry.path) == "images" for entry in entries)
    if 0 < images < len(entries):
        raise mixed_media_error(manifest, len(entries) - images, images)
    return Listing("images" if images else "videos", entries, skips)


# --------------------------------------------------------------------------------------------------
# Sources


@runtime_checkable
class ClipSource(Protocol):
    """What the batch stream needs from a dataset: a count, a name, and a way to read V frames of a clip.

    A source may also have ``skipped``: ``[(name, reason), ...]`` left out when it was made (manifest rows,
    files, shards), which the training loader reports with the unusable videos; ``media``: "images" for
    still images (one frame each: no view can be drawn at another time), "videos" when absent; and
    ``located(i, reason)``: the reason with where clip ``i`` was listed (``located_reason``).
    """

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        """uint8 [V, H, W, 3]; ``times_fn(duration)`` gives the view times once the duration is known."""
        ...


def source_media(source: ClipSource) -> str:
    """"images" for a source of still images, else "videos" (a source without ``media`` holds videos)."""
    return getattr(source, "media", "videos")


class _FileSource:
    """What the sources of listed files share: the entries, the skips made while listing, names, and where a
    file was listed."""

    def __init__(self, entries: Sequence[VideoEntry], skipped: Sequence[Skip] = ()):
        self.entries = list(entries)
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return len(self.entries)

    def name(self, i: int) -> str:
        return str(self.entries[i].path)

    def located(self, i: int, reason: str) -> str:
        """``reason`` with the manifest line that listed file ``i`` in front (a file found in a folder: as is),
        so that train.log gives the line of every skipped row (zero-byte, truncated, not a video), as it does
        for the rows of missing files."""
        entry = self.entries[i]
        if entry.manifest is None or entry.line is None:
            return reason
        return f"{_line_of(entry.manifest, entry.line)}: {reason}"


def located_reason(source: ClipSource, i: int, reason: str) -> str:
    """Why clip ``i`` is skipped, with the manifest line that listed it where the source knows it."""
    located = getattr(source, "located", None)
    return located(i, reason) if located is not None else reason


class VideoFolderSource(_FileSource):
    """Raw video files, decoded with seeking by ``vito.data.video`` (each clip opens its file once)."""

    media = "videos"

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        with VideoReader(self.entries[i].path) as reader:
            return reader.frames_at(times_fn(reader.info.duration), short_side)


class ImageFolderSource(_FileSource):
    """Still image files, each a "video" of one frame at time 0 (``duration`` 0): all V views of its clip are
    cut from that frame, by independent crops, flips and colour changes (the MoCLR image baseline). Read by
    the one image reader (``vito.data.images``: CMYK, palette and 16-bit pictures converted, bombs refused).

    Unlike a video frame, the picture is not resized to ``short_side``: the crops are cut from it as decoded,
    as BYOL and MoCLR cut them from the original image (a 1x1 picture is enlarged by its crops), and a JPEG
    whose short side is twice ``short_side`` or more is decoded at a DCT scale (1/2, 1/4, 1/8) that keeps it
    at least ``short_side``. No intermediate resize: cheaper, and nothing lost before the crop.
    """

    media = "images"

    def read_clip(self, i: int, times_fn: TimesFn, short_side: int | None) -> torch.Tensor:
        """uint8 [V, H, W, 3]: the one picture V times (a view of one array: the crops only read it)."""
        views = len(times_fn(0.0))  # draws the times a video's clip would draw, so every source uses its rng alike
        frame = torch.from_numpy(read_rgb(self.entries[i].path, "image", short_side))
        return frame.expand(views, *frame.shape)


def still_frame(path: str | Path, short_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 [H, W, 3] of an image file at ``short_side`` (rounded as a video frame is: ``output_size`` of the
    file's own size), and the file's (width, height): how ``vito prepare`` stores an image. A large JPEG is
    decoded at a reduced DCT scale first, then resized as the shard reader resizes (``resize_into``)."""
    pixels, (width, height) = read_rgb_and_size(path, "image", short_side)
    out_width, out_height = output_size(width, height, short_side)
    if pixels.shape[:2] == (out_height, out_width):
        return pixels, (width, height)
    frame = np.empty((out_height, out_width, 3), dtype=np.uint8)
    resize_into(pixels, frame)
    return frame, (width, height)


def open_source(path: str | Path) -> ClipSource:
    """A shard folder (holding ``shards.json``) becomes a ``ShardSource``; anything else is raw videos
    (``VideoFolderSource``) or still images (``ImageFolderSource``), as ``list_source`` finds them."""
    path = Path(path)
    if is_shard_folder(path):
        from vito.data.shards.reader import ShardSource  # lazy: only shard users pay for its imports

        return ShardSource(path)
    listing = list_source(path)
    source = ImageFolderSource if listing.media == "images" else VideoFolderSource
    return source(listing.entries, listing.skipped)
