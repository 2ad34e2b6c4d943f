"""The one progress helper: both forms count the work, bars stay off where nobody watches, messages still print."""

from __future__ import annotations

import logging

from vito.engine.progress import ProgressLogHandler, progress, write


def test_both_forms_count_and_nothing_is_drawn_when_stderr_is_not_a_terminal(capsys) -> None:
    assert list(progress(range(3), desc="items")) == [0, 1, 2]
    with progress(total=4, initial=1, desc="steps", unit="step") as bar:
        bar.update(3)
        bar.set_postfix(loss="0.5")
    assert list(progress([1, 2], desc="rank 1", enabled=False)) == [1, 2]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # pytest's capture is no terminal


def test_messages_print_and_file_only_records_do_not(capsys) -> None:
    write("a message")
    logger = logging.getLogger("vito.test_progress")
    logger.propagate = False
    logger.addHandler(ProgressLogHandler())
    logger.warning("shown above the bars")
    logger.warning("train.log only", extra={"file_only": True})
    assert capsys.readouterr().out.splitlines() == ["a message", "shown above the bars"]
