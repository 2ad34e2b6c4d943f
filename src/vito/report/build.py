"""``vito report SUITE --out DIR``: bring the grid up to date, then write the three outputs from one document."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from vito.engine.run_folder import RunFolder
from vito.errors import VitoError
from vito.report.document import FORMAT, build_document, write_document
from vito.report.grid import PLANNED, GridRun, run_grid
from vito.report.html import write_html
from vito.report.launch.jobs import check_launcher, make_launcher
from vito.report.launch.settings import LauncherSettings
from vito.report.markdown import write_markdown
from vito.report.suite import load_suite


def check_report_folder(out: Path) -> None:
    """Refuse a ``--out`` that is a file, or a folder whose index.html / report.md are not a report's own (a
    project folder given by mistake would lose its files)."""
    if out.exists() and not out.is_dir():
        raise VitoError(f"--out {out} is a file, not a report folder")
    ours = out / "results.json"
    if any((out / name).exists() for name in ("index.html", "report.md")):
        try:
            format_ = json.loads(ours.read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            format_ = None
        if format_ != FORMAT:
            raise VitoError(f"--out {out} holds an index.html or report.md that no vito report wrote "
                            f"(no {ours.name} of format {FORMAT}); choose another folder")


def make_report(suite_path: str | Path, out: str | Path, only: Iterable[str] = (), dry_run: bool = False,
                echo: Callable[[str], None] = print, break_lock: bool = False,
                loggers: list[str] | None = None, launcher: str = "local",
                launcher_settings: LauncherSettings | None = None) -> GridRun:
    """Compute what is missing and write ``out/index.html``, ``out/report.md`` and ``out/results.json``.

    With ``dry_run`` nothing is computed or written: the planned cells are only listed. While it computes,
    the folder holds the run-folder lock (``vito.engine.run_folder``): a second report into the same folder is
    refused instead of computing the same cells and writing over the first one's files.

    ``launcher`` ``submitit``: the cells are submitted as jobs (resources: ``launcher_settings`` over the suite's
    ``launcher:`` block) and the report shows what is current; a later call collects and submits what is ready.
    """
    suite = load_suite(suite_path)
    out = Path(out)
    check_report_folder(out)
    settings = (launcher_settings or LauncherSettings()).over(suite.launcher)
    check_launcher(launcher, settings)
    if dry_run:
        run = run_grid(suite, out, only=only, dry_run=True, echo=echo, loggers=loggers)
        planned = sum(cell.status == PLANNED for cell in run.cells)
        echo(f"dry run: {planned} of {len(run.cells)} cells would be computed; nothing written")
        return run
    with RunFolder(out, resume=True, kind="report", run_files=(), break_lock=break_lock,
                   break_lock_hint="take it with vito report --break-lock") as folder:
        for note in folder.notes:
            echo(note)
        jobs = make_launcher(launcher, out, settings, echo)
        run = run_grid(suite, out, only=only, dry_run=False, echo=echo, loggers=loggers, launcher=jobs)
        document = build_document(suite, run, out)
        try:
            paths = [write_document(document, out), write_markdown(document, out), write_html(document, out)]
        except OSError as error:  # a full disk or a read-only folder; the atomic writes leave the old files whole
            raise VitoError(f"cannot write the report in {out}: {error.strerror or error} (a rerun reuses the "
                            f"cells already computed under {out / 'cells'})") from None
    pending = f", {len(run.pending)} queued, running or waiting (vito report {out} --status)" if run.pending else ""
    echo(f"{len(run.computed)} cells computed, {document['counts']['cached']} reused, {len(run.failed)} failed"
         f"{pending} -> {', '.join(str(p) for p in paths)}")
    return run
