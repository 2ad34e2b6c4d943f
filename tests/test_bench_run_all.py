"""`make bench` runs `python -m benchmarks.run_all`: it must exist, find every benchmark and refuse unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run_all


def test_run_all_lists_every_benchmark_script(capsys) -> None:
    scripts = sorted(p.stem for p in (Path(run_all.__file__).parent).glob("bench_*.py"))
    assert scripts and run_all.benchmarks() == scripts
    assert run_all.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == scripts


def test_run_all_refuses_an_unknown_benchmark() -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--only", "bench_nothing"])
