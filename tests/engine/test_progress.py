"""The one progress helper: both forms count the work, plain lines where nobody watches a terminal, messages
print above the bars."""

from __future__ import annotations

import logging

from vito.engine import progress as progress_module
from vito.engine.progress import ProgressLogHandler, progress, write


def test_where_nobody_watches_a_terminal_progress_is_plain_lines(capsys, monkeypatch) -> None:
    """pytest's capture is no terminal, as a scheduler's log file: no \\r frames, one line when a loop ends."""
    assert list(progress(range(3), desc="items")) == [0, 1, 2]
    with progress(total=4, initial=1, desc="steps", unit="step") as bar:
        bar.update(3)
        bar.set_postfix(loss="0.5")
    assert list(progress([1, 2], desc="rank 1", enabled=False)) == [1, 2]
    assert list(progress([1, 2], desc="nested", leave=False)) == [1, 2]
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and captured.out == ""
    assert len(lines) == 2 and lines[0].startswith("items: 3/3 it [00:00, ")
    assert lines[1].startswith("steps: 4/4 step [00:00, ") and lines[1].endswith("] loss=0.5")


def test_a_long_loop_writes_a_line_every_so_often_with_its_eta(capsys, monkeypatch) -> None:
    clock = iter([0.0, 5.0, 31.0, 40.0, 70.0])  # start, three updates (a line at 31 s), close
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    with progress(total=10, desc="pretrain", unit="step") as bar:
        for _ in range(3):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["pretrain: 2/10 step [00:31, 0.0645 step/s, ETA 02:04]",
                     "pretrain: 3/10 step [01:10, 0.0429 step/s, ETA 02:43]"]


def test_messages_print_and_file_only_records_do_not(capsys) -> None:
    write("a message")
    logger = logging.getLogger("vito.test_progress")
    logger.propagate = False
    logger.addHandler(ProgressLogHandler())
    logger.warning("shown above the bars")
    logger.warning("train.log only", extra={"file_only": True})
    assert capsys.readouterr().out.splitlines() == ["a message", "shown above the bars"]
