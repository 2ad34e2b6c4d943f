"""The pretraining runs of a study: one run folder per (row, seed) under ``OUT/runs/<row>/seed-<s>/``.

Why pretraining's own rules, not a second set: a study's run is exactly a ``vito pretrain --config C --data D
--out OUT/runs/ROW/seed-S train.seed=S`` run, so it is locked, resumable and refused the same way. Which run a
folder holds is decided by :mod:`vito.pretrain.resume`: its config may differ from the study's only in the
resumable keys (``check_resumable``; ``train.seed`` is not one), and its data must be the study's
(``data_path``, the rule of ``vito pretrain --resume``). A folder holding another run is refused, naming it,
unless ``--overwrite`` (then it is trained afresh, as ``vito pretrain --overwrite`` does). A finished run (its
newest checkpoint at ``train.max_steps``) is reused; a run stopped or killed half-way is resumed from its newest
intact checkpoint, so nothing half-written counts as done.

:func:`train_run` takes one picklable :class:`RunCell` and does the whole job of one run; the report's launcher
runs it (:func:`run_job`): here, one run after another (``--launcher local``), or as a submitit job whose cells
a later ``vito report`` submits once the run finished (``--launcher submitit``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vito.config import config_from_dict, load_config, with_added_keys
from vito.engine.checkpoint import has_checkpoint, load_checkpoint
from vito.engine.run_folder import holds_run
from vito.errors import VitoError
from vito.pretrain.resume import check_resumable, data_path
from vito.report.grid import describe, job_key
from vito.report.launch.jobs import PENDING, Job, Launcher, LocalLauncher
from vito.report.study import run_folder

# What a run folder holds, against what the study asks of it.
FINISHED, RESUME, START, REPLACE = "finished", "resume", "start", "replace"


class ForeignRun(VitoError):
    """A study's run folder holds another run (another config, seed or data): refused before anything runs."""


class PretrainStopped(VitoError):
    """A stop signal ended a study's pretraining run after a checkpoint; the next ``vito report`` resumes it."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.stopped_by = signal_name


@dataclass(frozen=True)
class RunCell:
    """One pretraining run of a study, as plain values: the row, the seed, the folder, the resolved config
    (``train.seed`` already the seed), the data, and whether a folder holding another run may be replaced."""

    row: str
    seed: int
    folder: Path
    config: dict[str, Any]
    data: str
    overwrite: bool = False

    @property
    def label(self) -> str:
        return f"{self.row} seed {self.seed}"


def plan_runs(rows: dict[str, Any], folders: dict[str, str], out: Path, overwrite: bool = False,
              only: Iterable[str] | None = None) -> list[RunCell]:
    """Every run of the study's pretraining ``rows`` (name -> ``PretrainRow``), row by row, seed by seed."""
    chosen = set(only) if only is not None else set(rows)
    return [RunCell(name, seed, run_folder(out, folders[name], seed), row.configs[seed], row.data, overwrite)
            for name, row in rows.items() if name in chosen for seed in row.seeds]


def run_state(run: RunCell) -> str:
    """What ``run.folder`` holds for this run: ``finished``, a run to ``resume``, nothing (``start``; also a
    run stopped before its first checkpoint, which starts again from step 0 as ``vito pretrain`` does), or
    another run to ``replace`` (only with ``overwrite``; without, a ``VitoError`` naming the difference)."""
    if not holds_run(run.folder):
        return START
    # an unreadable config.yaml or checkpoint is this run's own error (its cells fail with it), not another run
    saved = run.folder / "config.yaml"
    saved_config = load_config(saved, saved_run=True).to_dict() if saved.is_file() else None
    checkpoint = load_checkpoint(run.folder) if has_checkpoint(run.folder) else None
    try:
        if saved_config is not None:
            check_resumable(saved_config, run.config)
        if checkpoint is None:
            return START
        check_resumable(with_added_keys(checkpoint["config"])[0], run.config)
        data_path(run.data, checkpoint, [])
    except VitoError as error:
        if run.overwrite:
            return REPLACE
        raise ForeignRun(f"{run.folder} holds another run than {run.label} of this study: {error} (--overwrite "
                         "trains it afresh, deleting that run)") from None
    return FINISHED if checkpoint["step"] >= run.config["train"]["max_steps"] else RESUME


def train_run(run: RunCell) -> None:
    """Bring one run to its last step: reuse it when finished, else resume, start or (``overwrite``) replace
    it, by ``vito.pretrain``'s loop. A stop signal raises :class:`PretrainStopped` after the run's checkpoint."""
    from vito.pretrain.loop import pretrain

    state = run_state(run)
    if state == FINISHED:
        return
    result = pretrain(config_from_dict(run.config), run.data, run.folder, resume=state == RESUME,
                      overwrite=state == REPLACE)
    if result.stopped_by is not None:
        raise PretrainStopped(f"{result.stopped_by} stopped the pretraining run {run.folder} at step "
                              f"{result.step}; run the report again to resume it", result.stopped_by)


def check_runs(runs: list[RunCell]) -> dict[tuple[str, int], str | None]:
    """Each run's state, found before anything runs: a folder holding another run stops the command here
    (:class:`ForeignRun`); any other problem (an unreadable checkpoint) is left to that run (None)."""
    states: dict[tuple[str, int], str | None] = {}
    for run in runs:
        try:
            states[(run.row, run.seed)] = run_state(run)
        except ForeignRun:
            raise
        except VitoError:
            states[(run.row, run.seed)] = None
    return states


def run_job(run: RunCell, out: Path) -> Job:
    """The launcher's job of a run: :func:`train_run` on all the job's GPUs, keyed ``runs/ROW/seed-S``."""
    return Job(job_key(run.folder, out), run.folder, (train_run, (run,)), distributed=True)


def bring_runs_up_to_date(runs: list[RunCell], states: dict[tuple[str, int], str | None], out: Path,
                          dry_run: bool = False, echo: Callable[[str], None] = print,
                          launcher: Launcher | None = None) -> tuple[dict[tuple[str, int], str], set[tuple[str, int]]]:
    """Train every run that is not finished (``states``: :func:`check_runs`) through ``launcher`` (default: here,
    one after another). Returns the runs that failed (``(row, seed)`` -> error; their cells fail with it, the
    other runs go on) and those not finished yet: with ``dry_run`` the runs that would train, else the runs a
    cluster's launcher holds (queued, running, or finished on disk while its job has not ended), whose cells wait
    for a later call. A stop signal during a run here (:class:`PretrainStopped`) stops the report."""
    launcher = launcher or LocalLauncher()
    failed: dict[tuple[str, int], str] = {}
    pending: set[tuple[str, int]] = set()
    for run in runs:
        key, job = (run.row, run.seed), run_job(run, out)
        try:
            state = states.get(key) or run_state(run)
            if state == FINISHED and launcher.waiting_on((job.key,)) is None:
                continue
            if dry_run:
                pending.add(key)
                held = launcher.waiting_on((job.key,)) is not None  # --launcher submitit: already in a job
                echo(f"{run.label}: pretraining in its job ({job.key}: queued or running)" if held else
                     f"{run.label}: would {state} the pretraining run -> {run.folder}")
                continue
            if launcher.runs_here:
                echo(f"{run.label}: pretraining ({state}) -> {run.folder}")
            submitted = launcher.submit(job)
            if submitted in PENDING:  # a cluster holds it: a later vito report submits its cells
                pending.add(key)
                echo(f"{run.label}: pretraining {submitted} ({job.key}); its cells wait for a later vito report")
                continue
            echo(f"{run.label}: pretraining done")
        except PretrainStopped:
            raise
        except Exception as error:  # noqa: BLE001 - one failing run must not stop the others
            failed[key] = describe(error)
            echo(f"{run.label}: pretraining FAILED: {failed[key]}")
    return failed, pending
