"""A pretraining row's value: the mean ± sd of its seeds' cells, or undefined when any seed's cell is not sound.

Why undefined rather than the mean of the cells that worked: a mean over the seeds that happened to succeed
(or over a partial evaluation) is a different, optimistic number under the same label; the paper's claims are
differences of a point or two. So one failed, partial or missing seed makes the row's value undefined, shown
with the one sign for undefined values (:data:`UNDEFINED`) and the reason; every seed's own value stays in
``results.json`` and in its own cell folder. The sd is the sample standard deviation (n - 1), undefined for one
seed.
"""

from __future__ import annotations

import statistics
from typing import Any

UNDEFINED = "n/a"  # the one sign, everywhere, for a value that is not defined
SOUND = ("cached", "computed")  # grid.CACHED, grid.COMPUTED: a cell with a current result


def seeds_label(count: int) -> str:
    return f"mean ± sd over {count} seeds" if count != 1 else "1 seed, no sd"


def aggregate(cells: list[dict[str, Any]], row_folder: str) -> dict[str, Any]:
    """The aggregate record of one row's cells of one entry (one per seed), shaped like a cell record so the
    tables show it the same way: ``status`` failed/partial/missing when any seed's cell is, ``metrics`` the
    means (None when undefined), ``sd`` and ``values`` (every seed's value, in seed order) per metric."""
    cells = sorted(cells, key=lambda cell: cell["seed"])
    seeds = [cell["seed"] for cell in cells]
    record: dict[str, Any] = {
        "row": cells[0]["row"], "entry": cells[0]["entry"], "evaluation": cells[0]["evaluation"], "seeds": seeds,
        "folder": row_folder, "status": "computed", "reason": None, "metrics": {}, "sd": {}, "values": {},
        "kinds": {}, "coverage": None, "seconds": None, "error": None, "aggregate": True,
    }
    failed = [cell for cell in cells if cell["status"] == "failed"]
    missing = [cell for cell in cells if cell["status"] not in SOUND and cell["status"] != "failed"]
    partial = [cell for cell in cells if cell["status"] in SOUND and cell["coverage"] and cell["coverage"]["partial"]]
    if failed:
        record.update(status="failed", error="; ".join(f"seed {c['seed']}: {c['error']}" for c in failed))
    elif missing:
        record.update(status=missing[0]["status"], reason=f"seed {missing[0]['seed']} not computed")
    elif partial:
        record["reason"] = "partial coverage of seed " + ", ".join(str(c["seed"]) for c in partial)
    if partial and not failed and not missing:
        record["coverage"] = {"partial": True, "used": None, "expected": None, "note": record["reason"]}
    names = list(dict.fromkeys(name for cell in cells for name in cell["metrics"]))
    for name in names:
        values = [cell["metrics"].get(name) for cell in cells]
        record["values"][name] = values
        record["kinds"][name] = next((cell["kinds"][name] for cell in cells if name in cell["kinds"]), "value")
        defined = not (failed or missing or partial) and all(value is not None for value in values)
        record["metrics"][name] = statistics.fmean(values) if defined else None
        record["sd"][name] = statistics.stdev(values) if defined and len(values) > 1 else None
    return record
