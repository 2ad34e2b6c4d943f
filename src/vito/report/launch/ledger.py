"""``DIR/jobs/``: which job computes which key of a study, where its logs are, and what became of it.

Why a ledger: submitit jobs outlive the ``vito report`` call that submitted them. The next call must know that
a cell is already queued or running (and not submit it twice), and ``--status`` must name each job's id and log
files without asking the user to search. One JSON file, written atomically after each submission, so a crash
between two submissions loses nothing but the job in flight. Each job's submitit files (pickles, logs) go to
its own folder ``DIR/jobs/<key>/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from vito.errors import DataError
from vito.io import read_json, write_json

JOBS_DIR = "jobs"
LEDGER_FILE = "ledger.json"
FORMAT = "vito-jobs/1"


@dataclass
class Entry:
    """One submitted job: its key, submitit's job id and cluster, its log files, its state and last error."""

    key: str
    job_id: str
    cluster: str
    folder: str  # what the job writes (a cell's folder, a run's)
    log_folder: str
    stdout: str
    stderr: str
    state: str
    submitted: float  # time.time() at submission
    error: str | None = None


class Ledger:
    """The entries of ``out/jobs/ledger.json`` by key (read once; ``save`` writes them all atomically)."""

    def __init__(self, out: Path) -> None:
        self.folder = Path(out) / JOBS_DIR
        self.path = self.folder / LEDGER_FILE
        self.entries: dict[str, Entry] = {}
        if self.path.is_file():
            self.entries = _entries(read_json(self.path, "job ledger"), self.path)

    def log_folder(self, key: str) -> Path:
        return self.folder / key

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"format": FORMAT, "saved": time.time(),
                               "jobs": {key: asdict(entry) for key, entry in self.entries.items()}})


def _entries(data: Any, path: Path) -> dict[str, Entry]:
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("jobs"), dict):
        raise DataError(f"job ledger {path} is not of format {FORMAT}; move it away to start the ledger afresh")
    names = {f.name for f in fields(Entry)}
    try:
        return {key: Entry(**{k: v for k, v in value.items() if k in names}) for key, value in data["jobs"].items()}
    except TypeError as error:
        raise DataError(f"job ledger {path}: a job lacks a field ({error})") from None
