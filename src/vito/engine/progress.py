"""Progress of long loops: one place decides how it looks on a terminal and in a log file.

Every loop that takes long (training steps, epochs, the batches of an evaluation) reports through
:func:`progress`, and messages meant for the person watching go through :func:`write` (or a logger with
:class:`ProgressLogHandler`), so that they are printed above the bars instead of through them.

How it looks today: on a terminal, a tqdm bar; when stderr is not a terminal (a scheduler's log file), no bar
(tqdm's ``disable=None``), while :func:`write` still prints. A different look for non-terminals (plain lines
every so often) belongs in :class:`Progress`, and only there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress(Generic[T]):
    """The progress of one loop: iterate over it (iterable form) or call :meth:`update` once per unit of work."""

    def __init__(self, iterable: Iterable[T] | None, *, total: int | None, desc: str, unit: str, initial: int,
                 enabled: bool, leave: bool) -> None:
        # disable=None: tqdm draws only when stderr is a terminal; enabled=False: never (e.g. ranks other than 0)
        self._bar = tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                         disable=None if enabled else True, dynamic_ncols=True)

    def __iter__(self) -> Iterator[T]:
        return iter(self._bar)

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Figures shown after the bar (loss, learning rate...), replacing the previous ones."""
        self._bar.set_postfix(**values)

    def close(self) -> None:
        self._bar.close()

    @staticmethod
    def write(message: str) -> None:
        """Print a line above the bar (the module's :func:`write`)."""
        write(message)


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             initial: int = 0, enabled: bool = True, leave: bool = True) -> Progress[T]:
    """Report the progress of a loop over ``iterable`` (``total`` defaults to its length), or of ``total`` units
    counted with :meth:`Progress.update`. ``enabled=False`` shows nothing (a process other than the main one);
    ``leave=False`` removes the bar when it closes (loops nested in a longer one)."""
    return Progress(iterable, total=total, desc=desc, unit=unit, initial=initial, enabled=enabled, leave=leave)


def write(message: str) -> None:
    """Print a line for the person watching, above any progress bar."""
    tqdm.write(message)


class ProgressLogHandler(logging.Handler):
    """A logging handler that prints records above the progress bars. Records logged with
    ``extra={"file_only": True}`` are skipped (per-step lines belong in a log file; the bar already shows them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "file_only", False):
            write(record.getMessage())
