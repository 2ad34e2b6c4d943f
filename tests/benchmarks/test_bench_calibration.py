"""The calibration benchmark resumes: every finished (setting, seed) is on disk at once, a rerun skips it, a
setting whose overrides changed is redone, and one failed run neither stops the others nor records anything."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_calibration


@pytest.fixture
def fake_runs(monkeypatch):
    calls = []

    def run_one(setting, seed, work, threads):
        calls.append((setting, seed))
        if setting == "2 views" and seed == 1:
            raise SystemExit("vito demo failed with exit status 1")
        return {"setting": setting, "seed": seed, "overrides": bench_calibration.SETTINGS[setting], "stages": [-2, -1],
                "trained": 0.5 + seed / 10, "random_init": 0.125, "chance": 0.125,
                "attention_trained": [0.3, 0.1], "attention_random_init": [0.07, 0.05], "subject_area": 0.083,
                "final_loss": 15.0, "steps": 200, "cpu_seconds": 300.0, "peak_gib": 2.0, "wall_seconds": 400.0}

    monkeypatch.setattr(bench_calibration, "run_one", run_one)
    return calls


def test_resumes_and_records_each_run(tmp_path, fake_runs, monkeypatch) -> None:
    only = ["--only", "baseline (demo)", "2 views", "--results", str(tmp_path)]
    runs = bench_calibration.main([*only, "--seeds", "0", "1"])
    assert fake_runs == [("baseline (demo)", 0), ("2 views", 0), ("baseline (demo)", 1), ("2 views", 1)]  # seed by seed
    assert len(runs) == 3  # the failed one is not recorded
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert {(r["setting"], r["seed"]) for r in stored["runs"]} == {("baseline (demo)", 0), ("2 views", 0),
                                                                   ("baseline (demo)", 1)}
    assert stored["summary"]["baseline (demo)"]["trained"]["mean"] == pytest.approx(0.55)
    table = (tmp_path / "calibration.md").read_text()
    assert "| baseline (demo) | 2 (0, 1) | 55.0 ± 7.1 |" in table and "| 2 views | 1 (0) |" in table
    assert "| one scale (res5) | 0 | not run yet |" in table

    fake_runs.clear()
    bench_calibration.main([*only, "--seeds", "0", "1"])
    assert fake_runs == [("2 views", 1)]  # only the failed one is tried again

    # another instance recorded a run meanwhile: this one keeps it when it writes
    stored = json.loads((tmp_path / "calibration.json").read_text())
    other = {**stored["runs"][0], "setting": "T = 3.2 s", "overrides": bench_calibration.SETTINGS["T = 3.2 s"]}
    (tmp_path / "calibration.json").write_text(json.dumps({**stored, "runs": [*stored["runs"], other]}))
    fake_runs.clear()
    bench_calibration.main([*only, "--seeds", "2"])
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert {(r["setting"], r["seed"]) for r in stored["runs"]} >= {("T = 3.2 s", 0), ("baseline (demo)", 2)}

    fake_runs.clear()
    monkeypatch.setitem(bench_calibration.SETTINGS, "2 views", ["data.num_views=2", "data.image_size=32"])
    bench_calibration.main([*only, "--seeds", "0"])
    assert fake_runs == [("2 views", 0)]  # its overrides changed: its old result no longer counts


def test_one_seed_shows_its_value_without_a_made_up_sd():
    from benchmarks.bench_calibration import _cell

    assert _cell({"mean": 0.5, "sd": None}) == "50.0"
    assert _cell({"mean": 0.5, "sd": 0.1}) == "50.0 ± 10.0"
    assert _cell({"mean": 301.4, "sd": None}, percent=False) == "301"
