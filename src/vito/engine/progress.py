"""Progress of long loops: one place decides how it looks on a terminal and in a log file.

Every loop that takes long (training steps, epochs, the batches of an evaluation) reports through
:func:`progress`, and messages meant for the person watching go through :func:`write` (or a logger with
:class:`ProgressLogHandler`), so that they are printed above the bars instead of through them.

How it looks: on a terminal, a tqdm bar. When stderr is not a terminal (a scheduler's log file, a pipe), plain
lines instead, never ``\r`` frames: one every :data:`LINE_SECONDS` while the loop runs and one when it ends
(``desc: n/total unit [elapsed, rate, ETA] key=value...``), so a log shows where a job was without a screen of
redrawn bars. ``enabled=False`` (the processes other than rank 0) shows nothing either way.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LINE_SECONDS = 30.0  # how often a loop writes a line where stderr is not a terminal


def on_terminal() -> bool:
    """Whether progress is drawn as bars (stderr is a terminal) or written as plain lines."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress(Generic[T]):
    """The progress of one loop: iterate over it (iterable form) or call :meth:`update` once per unit of work."""

    def __init__(self, iterable: Iterable[T] | None, *, total: int | None, desc: str, unit: str, initial: int,
                 enabled: bool, leave: bool) -> None:
        self._iterable, self.desc, self.unit, self.leave = iterable, desc, unit, leave
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n, self._initial, self._postfix = initial, initial, ""
        self._lines = enabled and not on_terminal()
        self._bar = tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                         dynamic_ncols=True) if enabled and not self._lines else None
        self._started = self._last_line = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        if self._bar is not None:
            yield from self._bar
            return
        for item in self._iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)
            return
        self.n += n
        if self._lines:
            now = time.monotonic()
            if now - self._last_line >= LINE_SECONDS:
                self._write_line(now)

    def set_postfix(self, **values: Any) -> None:
        """Figures shown after the bar (loss, learning rate...), replacing the previous ones."""
        if self._bar is not None:
            self._bar.set_postfix(**values)
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and not self._closed and self.leave:
            self._write_line(time.monotonic())
        self._closed = True

    def _write_line(self, now: float) -> None:
        """``desc: n/total unit [elapsed, rate unit/s, ETA]`` and the postfix, as one plain line."""
        self._last_line = now
        elapsed = now - self._started
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        timing = [tqdm.format_interval(elapsed), f"{rate:.3g} {self.unit}/s"]
        if self.total is not None and rate > 0 and self.n < self.total:
            timing.append(f"ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        text = f"{self.desc}: {count} {self.unit} [{', '.join(timing)}]" + (f" {self._postfix}" if self._postfix else "")
        write(text, file=sys.stderr)

    @staticmethod
    def write(message: str) -> None:
        """Print a line above the bar (the module's :func:`write`)."""
        write(message)


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             initial: int = 0, enabled: bool = True, leave: bool = True) -> Progress[T]:
    """Report the progress of a loop over ``iterable`` (``total`` defaults to its length), or of ``total`` units
    counted with :meth:`Progress.update`. ``enabled=False`` shows nothing (a process other than the main one);
    ``leave=False`` removes the bar when it closes (loops nested in a longer one)."""
    return Progress(iterable, total=total, desc=desc, unit=unit, initial=initial, enabled=enabled, leave=leave)


def write(message: str, file: Any = None) -> None:
    """Print a line for the person watching, above any progress bar (stdout unless ``file`` says otherwise)."""
    tqdm.write(message, file=file)


def end_bars() -> None:
    """Close the bars still drawn, so that what is printed next (an error) starts on a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class ProgressLogHandler(logging.Handler):
    """A logging handler that prints records above the progress bars. Records logged with
    ``extra={"file_only": True}`` are skipped (per-step lines belong in a log file; the bar already shows them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "file_only", False):
            write(record.getMessage())
