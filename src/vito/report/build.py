"""``vito report SUITE --out DIR``: bring the grid up to date, then write the three outputs from one document."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from vito.engine.run_folder import RunFolder
from vito.errors import VitoError
from vito.report.document import FORMAT, build_document, write_document
from vito.report.figures import plot_records
from vito.report.grid import PLANNED, GridRun, RunStates, plan_cells, run_grid, select_cells
from vito.report.html import write_html
from vito.report.launch.jobs import check_launcher, make_launcher
from vito.report.launch.settings import LauncherSettings
from vito.report.markdown import write_markdown
from vito.report.runs import RunCell, bring_runs_up_to_date, check_runs, plan_runs
from vito.report.study import check_data
from vito.report.suite import Suite, load_suite


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
        if format_ not in (FORMAT, "vito-report/1"):  # 1: before studies
            raise VitoError(f"--out {out} holds an index.html or report.md that no vito report wrote "
                            f"(no {ours.name} of format {FORMAT}); choose another folder")


def _runs(suite: Suite, out: Path, only: Iterable[str], overwrite: bool) -> list[RunCell]:
    """The study's pretraining runs that ``--only`` concerns: its rows' runs (all rows when it names none)."""
    rows = [name for name in only if name in suite.row_names]
    return plan_runs(suite.pretrain_rows, {name: suite.encoders[name].folder for name in suite.pretrain_rows}, out,
                     overwrite, rows or None)


def make_report(suite_path: str | Path, out: str | Path, only: Iterable[str] = (), dry_run: bool = False,
                echo: Callable[[str], None] = print, break_lock: bool = False,
                loggers: list[str] | None = None, overwrite: bool = False, launcher: str = "local",
                launcher_settings: LauncherSettings | None = None) -> GridRun:
    """Train the study's missing pretraining runs, compute the missing cells and write ``out/index.html``,
    ``out/report.md`` and ``out/results.json`` (with the plots under ``out/plots/``).

    With ``dry_run`` nothing is trained, computed or written: the planned runs and cells are only listed. While
    it computes, the folder holds the run-folder lock (``vito.engine.run_folder``): a second report into the
    same folder is refused instead of computing the same cells and writing over the first one's files.
    ``overwrite``: a run folder holding another run (another config or data) is trained afresh.

    ``launcher`` ``submitit``: the runs and cells are submitted as jobs (resources: ``launcher_settings`` over the
    suite's ``launcher:`` block) and the report shows what is current; a later call collects and submits what is
    ready (a run's cells once its run finished).
    """
    suite = load_suite(suite_path)
    out = Path(out)
    check_report_folder(out)
    settings = (launcher_settings or LauncherSettings()).over(suite.launcher)
    check_launcher(launcher, settings)
    only = list(only)
    check_data(suite.pretrain_rows, str(suite.path))
    select_cells(plan_cells(suite, out), suite, only)  # an unknown --only name stops before anything runs
    runs = _runs(suite, out, only, overwrite)
    states = check_runs(runs)  # a run folder holding another run stops the report here, before anything runs
    if dry_run:
        queued = make_launcher(launcher, out, settings, echo, dry_run=True)  # what jobs already hold
        failed, pending = bring_runs_up_to_date(runs, states, out, dry_run=True, echo=echo, launcher=queued)
        run = run_grid(suite, out, only=only, dry_run=True, echo=echo, loggers=loggers,
                       runs=RunStates(failed, pending), launcher=queued)
        planned = sum(cell.status == PLANNED for cell in run.cells)
        echo(f"dry run: {len(pending)} of {len(runs)} pretraining runs would train, {planned} of {len(run.cells)} "
             "cells would be computed; nothing written")
        return run
    with RunFolder(out, resume=True, kind="report", run_files=(), break_lock=break_lock,
                   break_lock_hint="take it with vito report --break-lock") as folder:
        for note in folder.notes:
            echo(note)
        jobs = make_launcher(launcher, out, settings, echo)  # submitit: collects what finished since the last call
        failed, in_jobs = bring_runs_up_to_date(runs, states, out, echo=echo, launcher=jobs)
        run = run_grid(suite, out, only=only, dry_run=False, echo=echo, loggers=loggers,
                       runs=RunStates(failed, in_jobs), launcher=jobs)
        run.failed_runs = failed
        document = build_document(suite, run, out)
        document["plots"] = plot_records(suite, document, out)
        run.plot_errors = [plot["error"] for plot in document["plots"] if plot["error"]]
        for error in run.plot_errors:
            echo(f"plot not drawn: {error}")
        try:
            paths = [write_document(document, out), write_markdown(document, out), write_html(document, out)]
        except OSError as error:  # a full disk or a read-only folder; the atomic writes leave the old files whole
            raise VitoError(f"cannot write the report in {out}: {error.strerror or error} (a rerun reuses the "
                            f"cells already computed under {out / 'cells'})") from None
    in_jobs = f", {len(in_jobs)} in jobs" if in_jobs else ""
    trained = f"{len(runs)} pretraining runs ({len(failed)} failed{in_jobs}), " if runs else ""
    pending = f", {len(run.pending)} queued, running or waiting (vito report {out} --status)" if run.pending else ""
    echo(f"{trained}{len(run.computed)} cells computed, {document['counts']['cached']} reused, {len(run.failed)} "
         f"failed{pending} -> {', '.join(str(p) for p in paths)}")
    return run
