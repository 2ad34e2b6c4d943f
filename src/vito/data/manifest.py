"""Manifests: the CSV and JSON Lines tables that list videos for `vito pretrain`, `vito prepare` and `vito curate`.

One reader, so that every command reads a table the same way: UTF-8 with or without the byte-order mark that
spreadsheet programs write (read as text it would rename the first CSV column ``\\ufeffpath``), a row the csv
module cannot parse or a line that is not a JSON object named by file and line, and ``path`` resolved against
the manifest's folder (``~`` expanded). The commands differ in one rule, chosen by the caller: a row without a
value in a required column is fatal where every row counts before any work starts (``vito prepare`` plans its
shards and ``vito curate`` its per-class cap over all rows: ``empty="raise"``), and a counted skip where the
training loader lists the videos it can use (``empty="skip"``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vito.errors import DataError

# The table format each manifest suffix is read as (a ``.json`` manifest holds one JSON object per line too).
MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

Locate = Callable[[Path, int], str]  # how messages name a line of a manifest


def at_line(path: Path, line: int) -> str:
    """``manifest.csv:3``: how ``vito prepare`` and ``vito curate`` name a line (as compilers do)."""
    return f"{path}:{line}"


@dataclass(frozen=True)
class SkippedRow:
    """A row left out for an empty required value (``empty="skip"``): its line, a name and the reason."""

    line: int
    name: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """The rows of a manifest in file order: ``(line, row)`` with ``row["path"]`` resolved, and the rows skipped."""

    path: Path
    rows: list[tuple[int, dict[str, Any]]]
    skipped: list[SkippedRow]


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` names a manifest by its suffix (``MANIFEST_SUFFIXES``)."""
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def read_manifest(path: str | Path, required: tuple[str, ...] = ("path",), *,
                  empty: Literal["raise", "skip"] = "raise", locate: Locate = at_line) -> Manifest:
    """The rows of a CSV or JSONL manifest whose ``required`` columns all hold a value.

    A missing file or column, a file that is not UTF-8, a malformed line, a ``path`` that is not text and an
    empty table are ``DataError``s naming the file (and line, as ``locate`` writes it). A row with an empty
    required value is one too (``empty="raise"``) or a ``SkippedRow`` (``empty="skip"``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: expected a .csv or .jsonl file")
    try:
        table = list(_csv_rows(path, required, locate) if kind == "csv" else _jsonl_rows(path, locate))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not table:
        raise DataError(f"{path}: no rows")
    rows, skipped = [], []
    for line, row in table:
        missing = [key for key in required if _is_empty(row.get(key), key, locate(path, line))]
        if missing:
            reason = f"{locate(path, line)}: empty {', '.join(missing)}"
            if empty == "raise":
                raise DataError(reason)
            skipped.append(SkippedRow(line, f"{path}:{line}", reason))
            continue
        if "path" in row:
            row["path"] = str(_resolve(path, row["path"]))
        rows.append((line, row))
    return Manifest(path, rows, skipped)


def _csv_rows(path: Path, required: tuple[str, ...], locate: Locate) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of each CSV row (the line it ends on); a row the csv module cannot parse (a field over its
    size limit, e.g. a stray quote that swallows the rest of the file) is a DataError naming the line."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            missing = [key for key in required if key not in (reader.fieldnames or [])]
            if missing:
                found = f"header {reader.fieldnames}" if reader.fieldnames else "an empty file"
                needed = " and a ".join(repr(key) for key in required)
                raise DataError(f"{path}: missing column {', '.join(missing)} (a CSV manifest needs a {needed} "
                                f"column; found {found})")
            for row in reader:
                yield reader.line_num, row
        except csv.Error as error:
            line = reader.line_num + 1  # the lines of the rows read so far, then the row that failed
            raise DataError(f"{locate(path, line)}: malformed CSV ({error})") from None


def _jsonl_rows(path: Path, locate: Locate) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of each non-blank line, which must be a JSON object."""
    with open(path, encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{locate(path, line)}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{locate(path, line)}: expected a JSON object, got {type(row).__name__}")
            yield line, row


def _is_empty(value: Any, key: str, where: str) -> bool:
    """Whether a required value is missing or blank; a ``path`` that is not text (a JSON number) names no file."""
    if key == "path" and value is not None and not isinstance(value, str):
        raise DataError(f"{where}: 'path' must be a string, got {type(value).__name__}")
    return not str(value or "").strip()


def _resolve(manifest: Path, name: str) -> Path:
    """A manifest's ``path`` value as a file name: relative names are relative to the manifest's folder. A
    ``~user`` of no known user stays as written (a file that is not found, not a crash in ``expanduser``)."""
    file = Path(name)
    try:
        file = file.expanduser()
    except RuntimeError:
        pass
    return file if file.is_absolute() else manifest.parent / file
