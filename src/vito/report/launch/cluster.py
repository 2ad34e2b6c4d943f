"""``vito report --launcher submitit``: each job of a study a submitit job (SLURM, or local processes).

A call submits what is ready and returns; jobs run on the cluster meanwhile. The next call first collects:
each queued or running job of the ledger is asked for its state (its result file, then SLURM's ``sacct`` or the
local process), so finished jobs free their dependents and nothing still queued is submitted twice. A job that
ended without a result (killed, out of memory, cancelled) is failed, named with its log files on ``--status``;
the next call submits it again (a run resumes from its checkpoint, a cell starts again).

submitit is imported here only: ``pip install 'vito[slurm]'``.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vito.errors import VitoError
from vito.report.launch.jobs import DONE, FAILED, QUEUED, RUNNING, WAITING, Job, Launcher
from vito.report.launch.ledger import Entry, Ledger
from vito.report.launch.settings import LauncherSettings, submitit_parameters

# SLURM job states (sacct) as the ledger's states; any other (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY,
# NODE_FAIL, PREEMPTED, COMPLETED without a result file...) is a failure
SLURM_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED")
SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
SLURM_UNKNOWN = ("UNKNOWN", "READY")  # not in sacct yet: keep what the ledger says

_SUBMITTED: dict[str, Any] = {}  # job id -> submitit job, for the jobs this process submitted (local: its children)
atexit.register(_SUBMITTED.clear)  # submitit's jobs clean up when deleted: while the interpreter is still whole


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise VitoError("--launcher submitit needs submitit: pip install 'vito[slurm]'") from None
    return submitit


class QueuedJobs(Launcher):
    """The jobs of ``out/jobs/`` that are queued or running now (collected; the ledger is not written): what a
    dry run asks (``vito report --dry-run --launcher submitit``). It submits nothing."""

    name = "submitit"
    runs_here = False

    def __init__(self, out: Path, save: bool = False) -> None:
        require_submitit()
        self.ledger = Ledger(out)
        collect(self.ledger, save=save)

    def waiting_on(self, keys: tuple[str, ...]) -> str | None:
        for key in keys:
            entry = self.ledger.entries.get(key)
            if entry is not None and entry.state in (QUEUED, RUNNING):
                return key
        return None

    def submit(self, job: Job) -> str:
        raise VitoError(f"{job.key}: a dry run submits nothing")


class SubmititLauncher(QueuedJobs):
    """Submits jobs with submitit's ``AutoExecutor``; the ledger under ``out/jobs/`` remembers them."""

    def __init__(self, out: Path, settings: LauncherSettings | None = None,
                 echo: Callable[[str], None] = print) -> None:
        super().__init__(out, save=True)
        self.submitit = require_submitit()
        self.settings = settings or LauncherSettings()
        self.cluster = self.settings.cluster or self.submitit.AutoExecutor.which()
        self.echo = echo

    def submit(self, job: Job) -> str:
        """Queue ``job`` unless it is queued or running already, or waits on a dependency."""
        from vito.report.launch.preemption import Preemptible

        entry = self.ledger.entries.get(job.key)
        if entry is not None and entry.state in (QUEUED, RUNNING):
            return entry.state
        if self.waiting_on(job.depends_on) is not None:
            return WAITING
        log_folder = self.ledger.log_folder(job.key)
        executor = self.submitit.AutoExecutor(folder=log_folder, cluster=self.cluster)
        parameters = submitit_parameters(self.settings, job.distributed)
        try:
            executor.update_parameters(name=f"vito-{job.key.replace('/', '-')}", **parameters)
        except (NameError, ValueError, AssertionError) as error:  # submitit's words for a parameter it refuses
            raise VitoError(f"launcher settings refused by submitit's {self.cluster} executor: {error}") from None
        submitted = executor.submit(Preemptible(job.call))
        _SUBMITTED[submitted.job_id] = submitted
        self.ledger.add(Entry(job.key, submitted.job_id, self.cluster, str(job.folder), str(log_folder),
                              str(submitted.paths.stdout), str(submitted.paths.stderr), QUEUED, time.time()))
        again = f" (job {entry.job_id} failed: {entry.error})" if entry is not None and entry.state == FAILED else ""
        self.echo(f"{job.key}: submitted job {submitted.job_id} -> logs in {log_folder}{again}")
        return QUEUED


def wait_for_submitted(timeout_s: float | None = None) -> None:
    """Until every job this process submitted has ended (a workstation's local jobs, a test)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for job in list(_SUBMITTED.values()):
        while not job.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job.job_id} still running after {timeout_s} s")
            time.sleep(0.2)


def collect(ledger: Ledger, save: bool = True) -> None:
    """Bring the state of each queued or running job of the ledger up to date (and save the ledger)."""
    changed = False
    for entry in ledger.entries.values():
        if entry.state in (QUEUED, RUNNING):
            state, error = job_state(entry)
            changed |= (state, error) != (entry.state, entry.error)
            entry.state, entry.error = state, error
    if changed and save:
        ledger.save()


def job_state(entry: Entry) -> tuple[str, str | None]:
    """A submitted job's state now, and why it failed: SLURM's view first when it says queued or running (a job
    that SLURM requeued itself, after a preemption, runs again whatever an earlier attempt left), then the
    result file (written when the call returned or raised), else the cluster's view of the job."""
    from submitit.core.utils import JobPaths, pickle_load

    slurm = _slurm_state(entry) if entry.cluster != "local" else None
    if slurm in SLURM_QUEUED:
        return QUEUED, None
    if slurm in SLURM_RUNNING:
        return RUNNING, None
    result = JobPaths(entry.log_folder, entry.job_id, task_id=0).result_pickle
    if result.exists():
        try:
            outcome, value = pickle_load(result)
        except Exception as error:  # noqa: BLE001 - a result we cannot read is a failed job, named
            return FAILED, f"unreadable result file {result}: {error}"
        if outcome == "success":
            return DONE, None
        return FAILED, _last_line(str(value))
    if slurm is None:
        return _local_state(entry)
    if slurm in SLURM_UNKNOWN:
        return entry.state, entry.error
    return FAILED, f"SLURM state {slurm}, no result (see {entry.stderr})"


def _local_state(entry: Entry) -> tuple[str, str | None]:
    """A local job runs while its controller process lives (a child of this process, or of an earlier call)."""
    job = _SUBMITTED.get(entry.job_id)
    if job is not None:
        alive = job.state == "RUNNING"
    else:
        try:
            os.kill(int(entry.job_id), 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    return (RUNNING, None) if alive else (FAILED, f"ended without a result (see {entry.stderr})")


def _slurm_state(entry: Entry) -> str:
    import submitit

    return str(submitit.SlurmJob(entry.log_folder, entry.job_id).state).split()[0]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"
