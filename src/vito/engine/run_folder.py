"""Run folders: one run per folder, never overwritten by accident, never shared by two live runs.

Why: a fresh ``vito pretrain --out DIR`` into a folder that already holds a run (a typo, a re-run script)
used to wipe its metrics and replace its checkpoints; two runs in one folder interleaved their metrics.
So a folder that holds a run (:func:`holds_run`) only takes a ``--resume`` of it or an explicit
``--overwrite``, and a live run holds a lock file ``.lock`` (host, pid) in its folder.

A lock left by a process that died (same host, pid gone) is stale: reported and taken over. A lock from
another host cannot be checked from here (shared file systems on clusters), so only ``--break-lock`` takes
it. In multi-process runs rank 0 does all of this and the other ranks wait for its outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vito.engine import distributed
from vito.errors import VitoError

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints")  # any of them: the folder holds a run
RUN_FILES = (*RUN_MARKERS, "tb", "train.log")  # what ``overwrite=True`` removes
LOCK = ".lock"
TEMP_PATTERN = ".*.tmp"  # temporary files of vito.io.atomic_write, left behind by a killed write


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds a run (config.yaml, metrics.jsonl or checkpoints/); empty or missing: no."""
    return any((Path(path) / name).exists() for name in RUN_MARKERS)


class RunFolder:
    """Context manager: checks, creates and locks a run folder for the duration of a run.

    ``notes`` collects what was found and fixed on the way in (a stale lock taken over, temporary files of a
    killed save removed), for the run's log.
    """

    def __init__(self, path: Path, *, resume: bool, overwrite: bool = False, break_lock: bool = False,
                 is_main: bool = True, kind: str = "pretrain", run_files: Sequence[str] = RUN_FILES,
                 resume_hint: str | None = None, break_lock_hint: str | None = "take it with --break-lock") -> None:
        """``resume_hint``: how the user continues such a run (default: pretraining's ``--resume RUN``);
        ``break_lock_hint``: how the user takes a folder whose lock cannot be checked (None: remove the lock file).
        Messages only offer what the command at hand can do."""
        if resume and overwrite:
            raise VitoError("--resume and --overwrite exclude each other: continue the run or start it afresh")
        self.path, self.resume, self.overwrite, self.break_lock = Path(path), resume, overwrite, break_lock
        self.is_main, self.kind, self.run_files = is_main, kind, tuple(run_files)
        self.resume_hint = resume_hint or f"--resume {self.path}"
        self.break_lock_hint = break_lock_hint or f"remove {self.path / LOCK}"
        self.notes: list[str] = []
        self._locked = False

    def check(self) -> None:
        """The refusal of :meth:`__enter__` for a fresh run into a run, early: before a long start-up."""
        self._on_main(self._refuse_a_fresh_run_into_a_run)

    def __enter__(self) -> RunFolder:
        self._on_main(self._take)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._locked:
            self._release()

    def _on_main(self, action: Callable[[], None]) -> None:
        """Run ``action`` on rank 0; every rank raises its error (the others wait for rank 0's outcome)."""
        error: VitoError | None = None
        if self.is_main:
            try:
                action()
            except VitoError as exc:
                error = exc
        message = distributed.broadcast_from_main(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise VitoError(f"{message} (reported by rank 0)")

    # rank 0

    def _refuse_a_fresh_run_into_a_run(self) -> None:
        if not self.resume and not self.overwrite and holds_run(self.path):
            raise VitoError(
                f"{self.path} already holds a run ({', '.join(self._markers())}); continue it with "
                f"{self.resume_hint}, start it afresh with --overwrite (deletes its checkpoints and logs), "
                "or choose another --out"
            )

    def _take(self) -> None:
        self._refuse_a_fresh_run_into_a_run()
        if self.path.exists() and not self.path.is_dir():
            raise VitoError(f"{self.path} is a file, not a run folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VitoError(f"cannot create the folder {self.path}: {error.strerror or error}") from error
        self._lock()
        if self.overwrite:
            self._empty()
        self._remove_temporary_files()

    def _markers(self) -> list[str]:
        return [name for name in RUN_MARKERS if (self.path / name).exists()]

    def _lock(self) -> None:
        lock = self.path / LOCK
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "kind": self.kind,
                "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        for _ in range(3):  # a stale lock removed by us can be taken by a concurrent start first
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder is not None or lock.exists():  # else: released meanwhile, try again
                    self._judge(lock, holder)
                continue
            except OSError as error:  # a read-only or full file system, no permission
                raise VitoError(f"cannot write in {self.path} (creating its lock file: {error.strerror or error})"
                                ) from error
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(mine, handle)
            except OSError as error:  # a full disk fails the write, not the create: leave no empty lock behind
                with contextlib.suppress(OSError):
                    lock.unlink()
                raise VitoError(f"cannot write in {self.path} (writing its lock file: {error.strerror or error})"
                                ) from error
            self._locked = True
            return
        raise VitoError(f"{lock}: could not take the run folder's lock (another run keeps taking it)")

    def _judge(self, lock: Path, holder: dict[str, Any] | None) -> None:
        """Remove a lock that may be taken (stale, or broken on request); raise for a live one."""
        here = socket.gethostname()
        if holder is None:
            who, live = "an unreadable lock", None
        else:
            who = f"process {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"
            live = _alive(holder.get("pid")) if holder.get("host") == here else None
        if self.break_lock:
            self.notes.append(f"broke the lock of {who} (--break-lock)")
        elif live is False:
            self.notes.append(f"took over the stale lock of {who}, which is no longer running")
        elif live is True:
            raise VitoError(f"{self.path} is in use by the run of {who}; wait for it to end or stop it "
                            f"(if that process is not a vito run: {self.break_lock_hint})")
        else:
            raise VitoError(f"{self.path} is locked by {who}, which cannot be checked from host {here}; "
                            f"if no run uses this folder any more, {self.break_lock_hint}")
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()

    def _empty(self) -> None:
        removed = []
        for name in self.run_files:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            else:
                continue
            removed.append(name)
        if removed:
            self.notes.append(f"--overwrite: removed {', '.join(removed)} of the previous run")

    def _remove_temporary_files(self) -> None:
        """Temporary files of a save killed half-way (atomic_write leaves them only when killed hard)."""
        for folder in (self.path, self.path / "checkpoints"):
            for temp in sorted(folder.glob(TEMP_PATTERN)) if folder.is_dir() else []:
                temp.unlink()
                self.notes.append(f"removed {temp}, left by an interrupted write")

    def _release(self) -> None:
        lock = self.path / LOCK
        holder = _read_lock(lock)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            lock.unlink()
        self._locked = False


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool | None:
    """Whether process ``pid`` runs on this host (None: not a pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
