"""Stop requests from a scheduler or a terminal: finish the step, write a checkpoint, exit with 128 + signal.

Why a flag and not an exception: a signal may arrive anywhere (inside a backward pass, a collective, a
checkpoint write). The handler only records it; the loop looks at the flag once per step, at a point where
all processes agree (``vito.engine.stopping.LossWatch.agree``), so every rank stops after the same step.

Who receives the signal: ``scancel``, SLURM's ``--signal=USR1@120``, Kubernetes, torchrun and Ctrl-C often
signal the whole *process group*, DataLoader workers included. A worker that dies takes the run down with
it (PyTorch raises in the main process when a worker exits), so workers ignore these signals
(:func:`ignore_stop_signals_in_worker`) and leave the decision to the main process, which shuts them down
normally when the loop ends. Workers are forked with the signals blocked (:func:`blocked`), so none can
arrive in the instant between a worker's start and its ``worker_init_fn``.

Exit status: 128 + the signal number, as a shell reports a process killed by that signal, so that a
scheduler never mistakes a stopped run for a finished one: SIGTERM -> 143, SIGINT -> 130, and SIGUSR1
(an early warning, "stop soon") -> 143 like SIGTERM. A second SIGINT (Ctrl-C twice) stops at once, without
a checkpoint (a save cut short leaves the previous one intact).

submitit jobs (``vito report --launcher submitit``): submitit ignores SIGTERM in its jobs and announces a
preemption or a time limit with SIGUSR2 (or the signal ``SUBMITIT_PREEMPT_SIGNAL`` names). Inside such a job
(``SUBMITIT_EXECUTOR`` set) that signal is one more stop signal, answered like SIGTERM (finish the step,
checkpoint, exit 143); the job's wrapper (``vito.report.launch.preemption``) then hands it back to submitit,
which requeues the job.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # registers multiprocessing's exit handler, which must run after ours (below)
import os
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
JOB_EXECUTOR_ENV = "SUBMITIT_EXECUTOR"  # set by submitit in every job it runs ("slurm", "local")
JOB_PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's own setting of its preemption signal


def job_preemption_signal() -> signal.Signals | None:
    """The signal submitit preempts (or times out) this job with: SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` names
    another; None outside a submitit job."""
    if not os.environ.get(JOB_EXECUTOR_ENV):
        return None
    name = "SIG" + os.environ.get(JOB_PREEMPT_SIGNAL_ENV, "USR2")
    return signal.Signals[name] if name in signal.Signals.__members__ else None


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that ask this process to stop: ``STOP_SIGNALS``, and submitit's preemption signal in its jobs,
    first: when processes received different signals, the agreed one is the first of this list, and a preemption
    must be named as such (the job is then requeued). Every process of a job sees the same environment, so every
    rank has the same list (``stopping`` agrees on it)."""
    extra = job_preemption_signal()
    return STOP_SIGNALS if extra is None else (extra, *(s for s in STOP_SIGNALS if s != extra))


def exit_status(signal_name: str) -> int:
    """The process exit status of a run stopped by ``signal_name`` ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")."""
    signum = signal.Signals[signal_name]
    if signum != signal.SIGINT:  # SIGUSR1 (SLURM's warning) and submitit's SIGUSR2 are requests to stop, like SIGTERM
        signum = signal.SIGTERM
    return 128 + int(signum)


def ignore_stop_signals_in_worker(worker_id: int | None = None) -> None:
    """DataLoader ``worker_init_fn`` piece: this worker ignores stop signals (the main process decides).

    Also unblocks them again (a worker starts with them blocked, see :func:`blocked`); a signal that arrived
    while blocked is discarded, being ignored.
    """
    for signum in stop_signals():
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals())


def _kill_workers_left_at_exit() -> None:
    """At exit, multiprocessing stops daemonic children (DataLoader workers) with SIGTERM and waits for them.
    Ours ignore SIGTERM, so a loader that was not shut down (its iterator kept alive by the traceback of an
    error raised in a worker) would make the process wait forever after printing the error. The workers hold
    nothing that needs saving: kill them. Registered after multiprocessing's handler, so it runs before it."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children:  # torch's SIGCHLD handler would report the killed workers as a failure of the exiting process
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
        child.join(timeout=5)


atexit.register(_kill_workers_left_at_exit)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Hold stop signals back (delivered on exit) while DataLoader workers are started by fork."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopSignal:
    """While :meth:`installed`, the stop signals (:func:`stop_signals`) set ``requested`` (and ``name``) instead of
    killing (or, in a submitit job, instead of submitit's own handler, which would requeue in the middle of a step:
    it is put back afterwards)."""

    def __init__(self) -> None:
        self.requested = False
        self.name: str | None = None
        self.preemption = job_preemption_signal()

    def _handle(self, signum: int, frame: Any) -> None:
        # the first signal names the stop (SIGUSR1 then SIGTERM: still SIGUSR1), except that a submitit job's
        # preemption signal names it whenever it comes (a cluster may send SIGTERM first): the job is requeued
        if not self.requested or (signum == self.preemption and self.name != self.preemption.name):
            self.requested, self.name = True, signal.Signals(signum).name
        elif signum == signal.SIGINT:  # Ctrl-C twice: the user does not want to wait (schedulers never do this)
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        try:
            previous = {s: signal.signal(s, self._handle) for s in stop_signals()}
        except ValueError:  # not the main thread: signals cannot be caught here
            previous = {}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
