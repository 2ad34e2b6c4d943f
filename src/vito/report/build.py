"""``vito report SUITE --out DIR``: bring the grid up to date, then write the three outputs from one document."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from vito.report.document import build_document, write_document
from vito.report.grid import PLANNED, GridRun, run_grid
from vito.report.html import write_html
from vito.report.markdown import write_markdown
from vito.report.suite import load_suite


def make_report(suite_path: str | Path, out: str | Path, only: Iterable[str] = (), dry_run: bool = False,
                echo: Callable[[str], None] = print) -> GridRun:
    """Compute what is missing and write ``out/index.html``, ``out/report.md`` and ``out/results.json``.

    With ``dry_run`` nothing is computed or written: the planned cells are only listed.
    """
    suite = load_suite(suite_path)
    out = Path(out)
    run = run_grid(suite, out, only=only, dry_run=dry_run, echo=echo)
    if dry_run:
        planned = sum(cell.status == PLANNED for cell in run.cells)
        echo(f"dry run: {planned} of {len(run.cells)} cells would be computed; nothing written")
        return run
    document = build_document(suite, run, out)
    paths = [write_document(document, out), write_markdown(document, out), write_html(document, out)]
    echo(f"{len(run.computed)} cells computed, {document['counts']['cached']} reused, {len(run.failed)} failed "
         f"-> {', '.join(str(p) for p in paths)}")
    return run
