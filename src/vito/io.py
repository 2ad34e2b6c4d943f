"""Small I/O helpers shared by every writer and reader: atomic files, JSON results, and text and JSON inputs
read with an error that names the file.

Why atomic: a long job killed mid-write must never leave a half-written checkpoint, manifest or result
that a later run would trust. Everything is written to a temporary file in the same folder and renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from vito.errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``.

    The file gets the permissions of any newly created file (0666 less the umask), not the 0600 of
    ``mkstemp``: a checkpoint or index written here is as readable as a file written with ``open``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=_jsonable)
        handle.write("\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def read_text(path: str | Path, what: str, kind: str = "UTF-8 text file") -> str:
    """The text of a list, CSV or JSON file; a missing, unreadable or non-UTF-8 file is a ``DataError`` naming
    ``what`` it is (a ``UnicodeDecodeError`` traceback tells the user nothing about which file is wrong)."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as error:
        raise DataError(f"{what} {path} does not exist") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{what} {path} is not a readable {kind}: {error}") from error


def read_json(path: str | Path, what: str) -> Any:
    """JSON from ``path``; a missing, non-UTF-8 or malformed file is a ``DataError`` naming ``what`` it is."""
    text = read_text(path, what, kind="JSON file")
    try:
        return json.loads(text)
    except ValueError as error:
        raise DataError(f"{what} {path} is not a readable JSON file: {error}") from error


def inside_name(name: str, where: str, *, subfolders: bool = False) -> str:
    """``name``, an id or file name read from a dataset's own file, once checked to stay inside its folder.

    Why: such names are joined to the dataset folder to read, and to ``--out`` to write (``predictions/<id>.png``);
    a list line ``../../../tmp/x`` or ``/etc/x`` would read or overwrite files outside both. Refused: empty names,
    absolute paths, ``.``/``..`` parts, backslashes and NUL; ``/`` only with ``subfolders`` (a path inside the
    dataset, as UCF-101's ``Class/video.avi``). ``where`` names the file (and line) the name came from.
    """
    parts = name.split("/")
    if (not name or "\\" in name or "\0" in name or any(part in ("", ".", "..") for part in parts)
            or (len(parts) > 1 and not subfolders)):
        kind = "a relative path inside the dataset" if subfolders else "a plain name (no '/')"
        raise DataError(f"{where}: {name!r} is not {kind}: names read from a dataset's files may not leave its "
                        "folder (no absolute path, no '..', no '\\')")
    return name
