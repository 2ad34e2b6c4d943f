"""Where a benchmark's figures go: ``benchmarks/results/NAME.json`` (the numbers) and ``NAME.md`` (the table
people read), both written atomically, and the table printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"


def save_report(name: str, report: dict[str, Any], table: str, folder: Path = RESULTS, echo: bool = True) -> None:
    """Write ``report`` as ``results/NAME.json`` and ``table`` as ``results/NAME.md`` (or into ``folder``), and
    print the table unless ``echo`` is false."""
    folder.mkdir(exist_ok=True)
    write_json(folder / f"{name}.json", report)
    with atomic_write(folder / f"{name}.md") as handle:
        handle.write(table)
    if echo:
        print(table)
