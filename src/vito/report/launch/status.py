"""``vito report DIR --status``: every job of the ledger with its state, job id and log file, and why it failed.

It only looks: the ledger is read and each queued or running job asked for its state, nothing is written or
submitted (a ``vito report`` call does that), so it may run while another call submits. A job that finished but
left its cell's ``error.json`` (the evaluation failed inside the job) is shown failed with that error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vito.errors import VitoError
from vito.report.launch.jobs import DONE, FAILED, QUEUED, RUNNING
from vito.report.launch.ledger import Entry, Ledger

ERROR_FILE = "error.json"  # what a failed cell leaves in its folder (vito.report.grid.ERROR_FILE)
ORDER = (FAILED, RUNNING, QUEUED, DONE)


def job_states(out: Path) -> list[Entry]:
    """The ledger's entries with their current state (cell errors included), failed first, then by key."""
    from vito.report.launch.cluster import collect, require_submitit

    require_submitit()
    ledger = Ledger(out)
    if not ledger.path.is_file():
        raise VitoError(f"{out}: no jobs were submitted here ({ledger.path} is missing; "
                        f"vito report SUITE --out {out} --launcher submitit submits them)")
    collect(ledger, save=False)
    entries = list(ledger.entries.values())
    for entry in entries:
        if entry.state == DONE:
            error = _cell_error(Path(entry.folder) / ERROR_FILE)
            if error is not None:
                entry.state, entry.error = FAILED, error
    return sorted(entries, key=lambda e: (ORDER.index(e.state) if e.state in ORDER else len(ORDER), e.key))


def _cell_error(path: Path) -> str | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(stored.get("error", "failed")) if isinstance(stored, dict) else None


def print_status(out: Path, echo: Callable[[str], None] = print) -> int:
    """Print the table; the exit status is 1 when a job failed, else 0."""
    entries = job_states(out)
    width = max(len(entry.key) for entry in entries) if entries else 0
    for entry in entries:
        log = entry.stderr if entry.state == FAILED else entry.stdout
        echo(f"{entry.state:<8} {entry.key:<{width}}  job {entry.job_id:<10} log {log}")
        if entry.state == FAILED and entry.error:
            echo(f"{'':<8} {entry.error}")
    counts = {state: sum(entry.state == state for entry in entries) for state in ORDER}
    echo(f"{len(entries)} jobs: " + ", ".join(f"{counts[state]} {state}" for state in (QUEUED, RUNNING, DONE, FAILED)))
    return 1 if counts[FAILED] else 0
