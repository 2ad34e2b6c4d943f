"""The launcher seam of ``vito report``: a job is a key, a folder and a picklable call; a launcher runs it.

Why a seam: the grid (and the study's pretraining runs) decide *what* must be computed and in which order; where
it runs is a separate choice. ``LocalLauncher`` runs each job here and now, one after another (the report's
behaviour before launchers existed), so a job's result is known when ``submit`` returns. The submitit launcher
(``vito.report.launch.cluster``) only queues it: a later ``vito report`` call collects what finished (from the
job's own files: ``result.json`` / ``error.json`` of a cell, the final checkpoint of a run) and submits what is
now ready. A job whose ``depends_on`` keys are not all done waits (``WAITING``) for such a later call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vito.errors import VitoError

# Job states (the ledger's and ``--status``'s words).
QUEUED, RUNNING, DONE, FAILED, WAITING = "queued", "running", "done", "failed", "waiting"
PENDING = (QUEUED, RUNNING, WAITING)  # submitted (or to be) and not ended yet: a dependent job waits

LAUNCHERS = ("local", "submitit")


@dataclass(frozen=True)
class Job:
    """One unit of a study: ``key`` names it in the ledger and on ``--status`` (``cells/ROW/EVALUATION``,
    ``runs/ROW/seed-S``), ``folder`` is where it writes, ``call`` what it runs: a picklable zero-argument callable
    or ``(function, args)``. ``distributed``: it may use all the job's GPUs and nodes (a pretraining run; one
    process per GPU), else one process on one node (an evaluation cell)."""

    key: str
    folder: Path
    call: Callable[[], Any] | tuple[Callable[..., Any], tuple[Any, ...]]
    depends_on: tuple[str, ...] = ()
    distributed: bool = False

    def run(self) -> Any:
        if isinstance(self.call, tuple):
            function, args = self.call
            return function(*args)
        return self.call()


class Launcher:
    """What the grid asks of a launcher. ``submit`` returns the job's state after the call: ``DONE``/``FAILED``
    when it ran here, ``QUEUED``/``RUNNING`` when a cluster holds it, ``WAITING`` when a dependency is not done."""

    name = "launcher"
    runs_here = True  # whether submit() computes the job before returning (the grid then reads it at once)

    def waiting_on(self, keys: tuple[str, ...]) -> str | None:
        """The first of ``keys`` whose job is still pending (not done), else None."""
        raise NotImplementedError

    def submit(self, job: Job) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Write down what was submitted (the submitit ledger); nothing for the local launcher."""


class LocalLauncher(Launcher):
    """Each job in this process, at once, in the order submitted: a job's dependencies ran before it. What each
    call returned is kept in ``outcomes`` by key (a pretraining run's ``RunResult``, say whether it stopped)."""

    name = "local"

    def __init__(self) -> None:
        self.outcomes: dict[str, Any] = {}

    def waiting_on(self, keys: tuple[str, ...]) -> str | None:
        return None

    def submit(self, job: Job) -> str:
        # a cell's evaluation records its own failure (error.json); an exception here is a bug or a stop request
        self.outcomes[job.key] = job.run()
        return DONE


def check_launcher(name: str, settings: Any = None) -> None:
    """Refuse an unknown launcher, submitit when it is not installed, or resources it cannot take (a malformed
    KEY=VALUE), before the report folder is touched."""
    if name not in LAUNCHERS:
        raise VitoError(f"--launcher {name}: expected one of {', '.join(LAUNCHERS)}")
    if name == "submitit":
        from vito.report.launch.cluster import require_submitit
        from vito.report.launch.settings import submitit_parameters

        require_submitit()
        if settings is not None:
            submitit_parameters(settings, distributed=True)


def make_launcher(name: str, out: Path, settings: Any = None, echo: Callable[[str], None] = print,
                  dry_run: bool = False) -> Launcher:
    """The launcher ``--launcher`` names for the report folder ``out`` (``settings``: its LauncherSettings); with
    ``dry_run`` one that only says which jobs are queued or running (submitit: the ledger, not written)."""
    if name == "local":
        return LocalLauncher()
    from vito.report.launch.cluster import QueuedJobs, SubmititLauncher  # imports submitit, needed only here

    return QueuedJobs(out) if dry_run else SubmititLauncher(out, settings, echo=echo)
