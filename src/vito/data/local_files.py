"""Local files as vito reads them: checked before they are opened, opened as file objects, walked once.

- Only regular files are read: a directory, a device (``/dev/zero``) or a FIFO named as a video is no video,
  and reading one would never end or fail late (``check_regular_file``).
- FFmpeg is handed open Python file objects, never names (``open_local_file``): it reads a name as a URL, so a
  manifest row ``pipe:0`` would read stdin (and hang), and ``concat:a|b``, ``subfile,,...`` or ``http://...``
  would read other files or the network.
- Folders are walked following symbolic links (a common way to assemble a dataset), but a real folder is
  entered once: a link back to a parent would otherwise loop forever, and a second link to the same folder
  would read its files twice (``walk_once``). ``file_identity`` tells two names of one file apart from two files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vito.errors import DataError


def error_text(error: BaseException) -> str:
    """The short text of an error for a one-line message: the OS's reason, else the message, else its type."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def check_regular_file(path: str | Path) -> None:
    """DataError unless ``path`` is a regular file (after symlinks). A name with a NUL byte (a corrupt manifest
    row) names no file at all: ``os.stat`` raises ``ValueError`` for it, not ``OSError``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({error_text(exc)})") from None
    except ValueError:
        raise DataError(f"{str(path)!r}: not a file name (it holds a NUL byte)") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file ({_file_kind(mode)})")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
             stat.S_ISFIFO: "a pipe", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def open_local_file(path: str | Path) -> BinaryIO:
    """The regular, non-empty file at ``path``, opened for reading (the caller closes it); a ``DataError``
    naming the file otherwise. Through a file object FFmpeg reads this file only, and its nested opens
    (concat lists, playlists) are refused."""
    check_regular_file(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the caller owns it and closes it
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({error_text(exc)})") from None
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        raise DataError(f"{path}: empty file (0 bytes)")
    return handle


def file_identity(file: str | Path) -> tuple[int, int]:
    """(device, inode) of a file (after links): the same for every name of one file."""
    status = os.stat(file)
    return status.st_dev, status.st_ino


def walk_once(root: str | Path) -> Iterator[Path]:
    """Every file name under ``root`` (folders in sorted order), following symlinked folders but entering each
    real folder once. Names are not checked: a dangling link or a FIFO is yielded like a file."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        identity = file_identity(folder)
        if identity in seen:
            subfolders[:] = []  # a link back into a folder already walked, or a second link to one
            continue
        seen.add(identity)
        subfolders.sort()
        yield from (Path(folder) / name for name in sorted(files))
