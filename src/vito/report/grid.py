"""The (row × evaluation) grid of ``vito report``: which cells are current, which to compute, in which order.

Why cells on disk: a report over a handful of encoders and the paper's benchmarks takes days; each cell is the
evaluation's own output folder, ``OUT/cells/<row>/<evaluation>/``, holding its ``result.json``. A cell is current
when that result was computed for the same encoder identity (the feature cache's rule: architecture + weights
file + step) and the same settings, so a rerun with one more encoder or evaluation computes only what is
missing, and a cell written beforehand by ``vito eval NAME ... --out OUT/cells/<row>/<evaluation>`` (say under
torchrun) is simply found. A failing cell records its error in ``error.json`` and the grid goes on.

Order: within an encoder's row the ``linear`` cell runs first, because its trained head
(``Result.artifacts["head"]``) is the ``--classifier`` of the row's classifier-based evaluations unless the
encoder names its own ``classifier``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vito.engine.finetune import FinetuneStopped
from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.registry import get, recorded_settings
from vito.eval.core.result import RESULT_JSON, RESULT_MD, Result, read_result
from vito.eval.core.running import NON_RESULT_SETTINGS, run_evaluation
from vito.io import write_json
from vito.report.launch.jobs import PENDING, WAITING, Job, Launcher, LocalLauncher
from vito.report.study import folder_name, run_folder
from vito.report.suite import EncoderEntry, Suite, make_settings

log = logging.getLogger(__name__)

CELLS_DIR = "cells"
HEAD_SOURCE = "linear"  # the evaluation whose trained head feeds the others' --classifier
HEAD_ARTIFACT = "head"
ERROR_FILE = "error.json"

# Cell states.
CACHED, COMPUTED, FAILED, NOT_RUN, PLANNED = "cached", "computed", "failed", "not run", "planned"


@dataclass
class Cell:
    """One evaluation entry of one row (and seed, for a pretraining row): its folder, options and, once known,
    its Result or error. ``evaluation`` is the registered ``vito eval`` name, ``entry`` the suite's entry."""

    row: str
    evaluation: str
    folder: Path
    encoder: EncoderEntry | None  # None: a reference row (scoring-only mode)
    options: dict[str, Any]
    needs_head: bool = False  # its --classifier is the head of the row's linear cell
    entry: str = ""
    seed: int | None = None  # the pretraining run's seed (None: an encoder or reference row)
    status: str = NOT_RUN
    result: Result | None = None
    error: str | None = None
    details: str = ""  # traceback of an unexpected exception
    settings: Any = None
    identity: str | None = None

    def __post_init__(self) -> None:
        self.entry = self.entry or self.evaluation

    @property
    def label(self) -> str:
        seed = f" seed {self.seed}" if self.seed is not None else ""
        return f"{self.row}{seed} × {self.entry}"


@dataclass
class GridRun:
    """What one ``vito report`` call did; ``computed`` and ``failed`` count this call's cells only."""

    cells: list[Cell]
    computed: list[Cell] = field(default_factory=list)
    failed: list[Cell] = field(default_factory=list)
    failed_runs: dict[tuple[str, int], str] = field(default_factory=dict)  # (row, seed) -> the run's error
    plot_errors: list[str] = field(default_factory=list)  # a plot that cannot be drawn (e.g. no such metric)
    pending: list[Cell] = field(default_factory=list)  # queued, running or waiting in a launcher's jobs


def head_entry(suite: Suite) -> str | None:
    """The entry whose trained head feeds the others' --classifier: the first of evaluation ``linear``."""
    return next((name for name, entry in suite.evaluations.items() if entry.evaluation == HEAD_SOURCE), None)


def row_encoders(entry: EncoderEntry, out: Path) -> list[tuple[int | None, EncoderEntry, Path]]:
    """``(seed, encoder, cells folder)`` of a row: one per seed for a pretraining row (the encoder of its run
    folder, as ``vito eval --encoder RUN`` loads it), else the row itself."""
    folder = out / CELLS_DIR / entry.folder
    if entry.pretrain is None:
        return [(None, entry, folder)]
    return [(seed, dataclasses.replace(entry, spec=EncoderSpec(str(run_folder(out, entry.folder, seed)))),
             folder / f"seed-{seed}") for seed in entry.pretrain.seeds]


def plan_cells(suite: Suite, out: Path) -> list[Cell]:
    """Every cell of the report in execution order: row by row (seed by seed), the head source first."""
    cells = []
    head = head_entry(suite)
    order = sorted(suite.evaluations, key=lambda name: name != head)  # stable: suite order otherwise
    for name, row in suite.encoders.items():
        for seed, encoder, folder in row_encoders(row, out):
            for entry_name in order:
                entry = suite.evaluations[entry_name]
                if get(entry.evaluation).needs_encoder is False:
                    continue  # scoring only: reference rows
                options = dict(entry.options)
                needs_head = False
                if get(entry.evaluation).uses_classifier:
                    if encoder.classifier is not None:
                        options["classifier"] = encoder.classifier
                    elif options.get("classifier") is None and head is not None:
                        needs_head = True
                cells.append(Cell(name, entry.evaluation, folder / entry_name, encoder, options, needs_head,
                                  entry_name, seed))
    for name, reference in suite.references.items():
        for entry_name, entry in suite.evaluations.items():
            if entry_name in reference.options:
                cells.append(Cell(name, entry.evaluation, out / CELLS_DIR / folder_name(name) / entry_name, None,
                                  reference.options[entry_name], entry=entry_name))
    return cells


def select_cells(cells: list[Cell], suite: Suite, only: Iterable[str]) -> set[int]:
    """Indices of the cells ``--only`` asks for: row names and evaluation names, each list a union, both an
    intersection (``--only vito --only knn`` is vito's kNN cell); the head source of a selected dependent too."""
    only = list(only)
    unknown = [name for name in only if name not in suite.row_names and name not in suite.evaluations]
    if unknown:
        raise VitoError(f"--only {unknown[0]}: not a row ({', '.join(suite.row_names)}) "
                        f"nor an evaluation ({', '.join(suite.evaluations)}) of the suite")
    rows = {name for name in only if name in suite.row_names}
    evaluations = {name for name in only if name in suite.evaluations}
    chosen = {i for i, cell in enumerate(cells)
              if (not rows or cell.row in rows) and (not evaluations or cell.entry in evaluations)}
    heads = {(cells[i].row, cells[i].seed) for i in chosen if cells[i].needs_head}
    head = head_entry(suite)
    chosen |= {i for i, cell in enumerate(cells) if (cell.row, cell.seed) in heads and cell.entry == head}
    return chosen


def head_file(cell: Cell | None) -> Path | None:
    """The trained head a linear cell left, if it has a current result naming one."""
    if cell is None or cell.result is None or HEAD_ARTIFACT not in cell.result.artifacts:
        return None
    path = cell.folder / cell.result.artifacts[HEAD_ARTIFACT]
    return path if path.is_file() else None


def _comparable(record: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    """Settings as compared for currency: no where/how-fast values, paths absolute, JSON-normalised."""
    kept = {}
    for name, value in record.items():
        if name in NON_RESULT_SETTINGS:
            continue
        if name in paths and value is not None:
            value = [os.path.abspath(v) for v in value] if isinstance(value, list) else os.path.abspath(value)
        kept[name] = value
    return json.loads(json.dumps(kept, default=str))


def _path_fields(settings: Any) -> set[str]:
    record = vars(settings)
    return {name for name, value in record.items()
            if isinstance(value, Path) or (isinstance(value, (list, tuple)) and value
                                           and all(isinstance(v, Path) for v in value))}


def matches(stored: dict[str, Any], cell: Cell, stored_identity: str | None) -> bool:
    """Whether a stored record (result or error) is for this cell's encoder identity and settings."""
    if stored_identity != cell.identity:
        return False
    paths = _path_fields(cell.settings)
    recorded = cell_settings(cell)
    expected = _comparable(recorded, paths)
    found = _comparable({name: stored.get(name, "<absent>") for name in recorded}, paths)
    return found == expected


def cell_settings(cell: Cell) -> dict[str, Any]:
    """The settings that shape this cell's numbers (those its Result records), as plain JSON values."""
    return recorded_settings(get(cell.evaluation), cell.settings, cell.encoder is not None)


def read_current(cell: Cell, head: Path | None) -> Result | None:
    """The cell's stored Result when it is current (same identity and settings; newer than its head)."""
    path = cell.folder / RESULT_JSON
    if not path.is_file():
        return None
    try:
        result = read_result(cell.folder)
    except (OSError, VitoError) as error:
        log.warning("%s: unreadable %s is recomputed: %s", cell.label, path, error)
        return None
    if result.evaluation != cell.evaluation:
        return None
    if not matches(result.settings, cell, result.encoder.get("identity")):
        return None
    if cell.encoder is not None and result.encoder.get("precision", cell.encoder.spec.precision) != \
            cell.encoder.spec.precision:
        return None  # bf16 and fp32 features differ
    if head is not None and path.stat().st_mtime_ns < head.stat().st_mtime_ns:
        return None  # computed with an older head of the linear cell
    return result


def read_error(cell: Cell) -> dict[str, Any] | None:
    """An earlier call's error for the same identity and settings (shown, then retried when selected)."""
    path = cell.folder / ERROR_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or not matches(stored.get("settings", {}), cell, stored.get("identity")):
        return None
    return stored


def describe(error: BaseException) -> str:
    """A user error's message as is; anything else with its type, since it is probably a bug."""
    return str(error) if isinstance(error, VitoError) else f"{type(error).__name__}: {error}"


def _fail(cell: Cell, error: BaseException, details: str = "") -> None:
    """Mark the cell failed and keep its error in ``error.json``. Why that write may fail quietly: the cell
    often failed because its folder cannot be written (a full disk); the error is still shown in the report."""
    cell.status, cell.error, cell.details = FAILED, describe(error), details
    try:
        cell.folder.mkdir(parents=True, exist_ok=True)
        write_json(cell.folder / ERROR_FILE, {
            "row": cell.row, "evaluation": cell.evaluation, "entry": cell.entry, "seed": cell.seed,
            "error": cell.error, "traceback": details,
            "identity": cell.identity,
            "settings": cell_settings(cell) if cell.settings is not None else {},
        })
    except OSError as write_error:
        log.warning("%s: cannot write %s: %s", cell.label, cell.folder / ERROR_FILE,
                    write_error.strerror or write_error)


def compute_cell(cell: Cell) -> None:
    """Run the cell's evaluation into its folder exactly as ``vito eval`` does (``run_evaluation``: the same
    checks, stamping and a freshly loaded encoder, since an evaluation may change its encoder in place, as
    DAVIS removes the stride of res4); an exception becomes the cell's error, never the grid's."""
    spec = cell.encoder.spec if cell.encoder is not None else None
    try:
        cell.folder.mkdir(parents=True, exist_ok=True)  # in the try: a folder that cannot be made fails the cell
        for stale in (RESULT_JSON, RESULT_MD, ERROR_FILE):
            (cell.folder / stale).unlink(missing_ok=True)
        cell.result = run_evaluation(cell.evaluation, cell.settings, cell.folder, spec)
    except FinetuneStopped:  # a stop request stops the report (the rerun resumes this cell's fine-tune)
        raise
    except Exception as error:  # noqa: BLE001 - one failing evaluation must not stop the others
        _fail(cell, error, "" if isinstance(error, VitoError) else traceback.format_exc())
        return
    cell.status = COMPUTED


@dataclass
class RunStates:
    """What the study's pretraining runs left for the grid: failed runs (their cells fail with the run's
    error) and runs not finished yet: in a dry run those that would train (their cells would be computed), else
    those a cluster's launcher holds (their cells wait for a later call)."""

    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    pending: set[tuple[str, int]] = field(default_factory=set)


def job_key(folder: Path, out: Path) -> str:
    """A job's key in the launcher's ledger and on ``--status``: its folder under the report folder
    (``cells/ROW/ENTRY``, ``cells/ROW/seed-S/ENTRY``, ``runs/ROW/seed-S``)."""
    return folder.relative_to(out).as_posix()


def cell_job(cell: Cell, source: Cell | None, out: Path) -> Job:
    """The launcher's job of a cell: ``compute_cell`` (picklable with the cell), after its head source's job and
    its pretraining run's job (a study's cell: its encoder is the run folder)."""
    depends = (job_key(source.folder, out),) if source is not None else ()
    if cell.seed is not None and cell.encoder is not None:
        depends += (job_key(run_folder(out, cell.encoder.folder, cell.seed), out),)
    return Job(job_key(cell.folder, out), cell.folder, (compute_cell, (cell,)), depends)


def run_grid(suite: Suite, out: Path, only: Iterable[str] = (), dry_run: bool = False,
             echo: Callable[[str], None] = print, loggers: list[str] | None = None,
             runs: RunStates | None = None, launcher: Launcher | None = None) -> GridRun:
    """Bring the selected cells up to date (or, with ``dry_run``, say what that would compute). ``loggers``
    (``--loggers``): the metrics loggers of every fine-tuning cell, in place of its suite's. ``runs``: what the
    study's pretraining runs left (``vito.report.runs.bring_runs_up_to_date``). ``launcher``: where cells run
    (default: here, one after another; ``vito.report.launch``)."""
    launcher = launcher or LocalLauncher()
    cells = plan_cells(suite, out)
    selected = select_cells(cells, suite, only)
    run = GridRun(cells)
    runs = runs or RunStates()
    head = head_entry(suite)
    by_key = {(cell.row, cell.seed, cell.entry): cell for cell in cells}
    identities: dict[tuple[str, int | None], str] = {}
    for index, cell in enumerate(cells):
        chosen = index in selected
        source = by_key.get((cell.row, cell.seed, head)) if cell.needs_head else None
        if (cell.row, cell.seed) in runs.pending:  # no checkpoint yet, so no identity: nothing to prepare
            if chosen and dry_run:
                cell.status = PLANNED
                echo(f"{cell.label}: would compute (after its pretraining run) -> {cell.folder}")
            elif chosen:  # its run is a launcher's job: a later call submits the cell once the run finished
                cell.status = WAITING
                run.pending.append(cell)
            continue
        if (cell.row, cell.seed) in runs.failed:
            cell.status, cell.error = FAILED, f"its pretraining run failed: {runs.failed[(cell.row, cell.seed)]}"
            if chosen:
                run.failed.append(cell)
            continue
        if source is not None and source.status in PENDING and chosen:  # its head is still being computed
            cell.status = WAITING
            run.pending.append(cell)
            continue
        if not _prepare(cell, source, identities, dry_run, loggers):
            if chosen:
                run.failed.append(cell)
                echo(f"{cell.label}: FAILED: {cell.error}")
            else:
                cell.status = NOT_RUN
            continue
        fresh_head = source is not None and source.status in (COMPUTED, PLANNED)
        cell.result = None if fresh_head else read_current(cell, head_file(source))
        if cell.result is not None:
            cell.status = CACHED
            continue
        _show_earlier_error(cell)
        if not chosen:
            continue
        if dry_run:
            cell.status = PLANNED
            held = launcher.waiting_on((job_key(cell.folder, out),)) is not None  # already in a job
            echo(f"{cell.label}: {'computing in its job (queued or running)' if held else 'would compute'} "
                 f"-> {cell.folder}")
            continue
        if launcher.runs_here:
            echo(f"{cell.label}: computing -> {cell.folder}")
        state = launcher.submit(cell_job(cell, source, out))
        if state in PENDING:  # a cluster holds it: a later vito report collects its result
            cell.status = state
            run.pending.append(cell)
            continue
        if cell.status == FAILED:
            run.failed.append(cell)
            echo(f"{cell.label}: FAILED: {cell.error}")
        else:
            run.computed.append(cell)
            echo(f"{cell.label}: done in {cell.result.seconds:.1f} s")
    return run


def _prepare(cell: Cell, source: Cell | None, identities: dict[str, str], dry_run: bool,
             loggers: list[str] | None = None) -> bool:
    """Fill the cell's identity and settings (with the head as classifier); False when that already fails."""
    try:
        if cell.encoder is not None:
            if (cell.row, cell.seed) not in identities:
                identities[(cell.row, cell.seed)] = cell.encoder.spec.identity()
            cell.identity = identities[(cell.row, cell.seed)]
        options = dict(cell.options)
        if cell.needs_head:
            head = head_file(source)
            if head is None and not (dry_run and source.status == PLANNED):
                state = source.error if source.status == FAILED else "it has no current result"
                raise VitoError(f"needs the head of the {source.entry} cell of {cell.row}, but {state}")
            options["classifier"] = str(head) if head is not None else "<head of the linear cell>"
        fields = {f.name for f in dataclasses.fields(get(cell.evaluation).Settings)}
        if "resume" in fields:
            options["resume"] = True  # the report owns its cells' fine-tunes: a stopped one is continued
        if loggers is not None and "loggers" in fields:  # the one LoggerSettings field of the fine-tuning cells
            options["loggers"] = list(loggers)
        cell.settings = make_settings(cell.evaluation, options)
    except Exception as error:  # noqa: BLE001 - e.g. an identity that cannot be computed (missing run folder)
        cell.status, cell.error = FAILED, describe(error)
        return False
    return True


def _show_earlier_error(cell: Cell) -> None:
    stored = read_error(cell)
    if stored is not None:
        cell.status, cell.error, cell.details = FAILED, stored.get("error", ""), stored.get("traceback", "")
