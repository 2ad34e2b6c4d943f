"""Where a benchmark's figures go: ``benchmarks/results/NAME.json`` (the numbers) and ``NAME.md`` (the table
people read), both written atomically, and the table printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"


def save_report(name: str, report: dict[str, Any], table: str) -> None:
    """Write ``report`` as ``results/NAME.json`` and ``table`` as ``results/NAME.md``, and print the table."""
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"{name}.json", report)
    with atomic_write(RESULTS / f"{name}.md") as handle:
        handle.write(table)
    print(table)
