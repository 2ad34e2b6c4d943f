"""The job wrapper that makes a submitit job preemption-safe, and the torchrun set-up of a multi-GPU job.

How a preempted job continues, in order:

1. SLURM (or submitit's local executor at its time limit) sends SIGUSR2 to every process of the job.
2. Inside a training loop that signal is one of vito's stop signals (``vito.engine.signals.stop_signals``): the
   step in flight finishes, every rank agrees to stop, rank 0 writes a checkpoint, the loop returns
   ``stopped_by="SIGUSR2"`` (a fine-tune raises ``FinetuneStopped``).
3. :class:`Preemptible` then hands the signal back to submitit (it raises it again, now that submitit's handler is
   in place once more). submitit calls :meth:`Preemptible.checkpoint`, which resubmits the same call, and requeues
   the job (``scontrol requeue``; the local executor restarts it). The requeued call finds the checkpoint in its
   folder and resumes from it, bit for bit.

Outside a training loop (start-up, an evaluation without training) submitit's own handler answers the signal at
once: the same requeue, and the call starts that part again. Another stop signal (SIGTERM from ``scancel``) ends
the job as failed after the checkpoint: the next ``vito report`` resubmits it and it resumes there.

Why not :class:`submitit.helpers.Checkpointable`: importing submitit here would make it a dependency of every
report; submitit only needs a ``checkpoint`` method (it checks ``hasattr``).
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from typing import Any

from vito.engine.signals import JOB_EXECUTOR_ENV, exit_status, job_preemption_signal
from vito.errors import VitoError

MASTER_PORT_RANGE = (20000, 60000)


class JobStopped(VitoError):
    """A stop signal other than the preemption signal (``scancel``: SIGTERM) ended the job after a checkpoint."""


class Preemptible:
    """A picklable job call that submitit requeues when it is preempted or reaches its time limit.

    ``call``: a zero-argument callable or ``(function, args)``, which must resume from its own folder when run
    again (the report's cells resume their fine-tunes; a pretraining run resumes from its checkpoint). A call that
    stops on a signal returns an object with ``stopped_by`` set (``vito.pretrain.loop.RunResult``) or raises an
    error with ``stopped_by`` set (``vito.engine.finetune.FinetuneStopped``).
    """

    def __init__(self, call: Callable[[], Any] | tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
        self.call = call

    def __call__(self) -> None:
        set_torchrun_variables()
        try:
            outcome = self.call[0](*self.call[1]) if isinstance(self.call, tuple) else self.call()
        except Exception as error:  # FinetuneStopped, or any error that names the stop signal in ``stopped_by``
            if isinstance(getattr(error, "stopped_by", None), str):
                self._stopped(error.stopped_by)
            raise
        if getattr(outcome, "stopped_by", None):
            self._stopped(outcome.stopped_by)
            raise JobStopped(f"stopped by {outcome.stopped_by} after a checkpoint; the next vito report resumes it")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: the same call (it resumes from its folder)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(Preemptible(self.call))

    @staticmethod
    def _stopped(signal_name: str) -> None:
        """After the checkpoint: the preemption signal goes back to submitit, which requeues (rank 0) or lets the
        process end (other ranks: SLURM's requeue ends them; the local executor waits for them)."""
        preemption = job_preemption_signal()
        if preemption is None or signal_name != preemption.name:
            return
        signal.raise_signal(preemption)  # submitit's handler: checkpoint(), requeue, exit
        raise SystemExit(exit_status(signal_name))  # not rank 0: no result file, so the job is not taken as done


def torchrun_variables(rank: int, local_rank: int, world_size: int, hosts: list[str], job_id: str) -> dict[str, str]:
    """The variables torchrun gives each process (``vito.engine.distributed.setup`` reads them), for a job's
    processes: the first host is the master, its port a function of the job id (the same on every process, and
    two jobs on one node rarely share it)."""
    low, high = MASTER_PORT_RANGE
    port = low + int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % (high - low)
    return {"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(max(1, world_size // max(1, len(hosts)))),
            "MASTER_ADDR": hosts[0], "MASTER_PORT": str(port)}


def set_torchrun_variables() -> None:
    """In a submitit job, the torchrun variables from submitit's ``JobEnvironment`` (its tasks are the processes);
    variables already set (a job started under torchrun) are kept. Nothing outside a submitit job."""
    if not os.environ.get(JOB_EXECUTOR_ENV):
        return
    from submitit import JobEnvironment

    env = JobEnvironment()
    values = torchrun_variables(env.global_rank, env.local_rank, env.num_tasks, list(env.hostnames), env.job_id)
    for name, value in values.items():
        os.environ.setdefault(name, value)
