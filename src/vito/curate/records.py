"""Durable record logs: each rank of a curation run appends one JSON line per decided candidate to its own
``OUT/parts/rank-XXXXX.jsonl``, fsync'ed before the next video starts, so a crash loses at most the video in flight.
A partial last line (a crash mid-write) is ignored when read and cut off before appending; anything else that
is not a record is a ``DataError`` naming the file and line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vito.errors import DataError


class RecordLog:
    """An append-only JSONL file: one fsync'ed line per record, so a crash loses at most the one in flight."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_partial_tail(path: Path) -> None:
    """Truncate a last line left without its newline by a crash, so appends start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            handle.truncate(keep)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Complete records of one log; an unterminated last line (a crash mid-write) is ignored. A damaged log
    (bytes that are not UTF-8, a line that is not a record with its candidate ``index``) is a DataError naming
    the file and line: merging it would mix unknown data into the accepted list."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: corrupt record log (not UTF-8 at byte {error.start})") from None
    lines = text.split("\n")[:-1]  # the piece after the last newline is empty or partial
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: corrupt record ({error})") from None
        if not isinstance(record, dict) or type(record.get("index")) is not int:
            raise DataError(f"{path}:{number}: corrupt record (not a JSON object with an integer 'index')")
        records.append(record)
    return records


def read_parts(out_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Every recorded candidate of every rank, by candidate index (the first record wins)."""
    records: dict[int, dict[str, Any]] = {}
    for part in sorted((Path(out_dir) / "parts").glob("rank-*.jsonl")):
        for record in read_records(part):
            records.setdefault(int(record["index"]), record)
    return records
