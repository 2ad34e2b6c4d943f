"""`vito report --launcher submitit` with submitit's local executor (real job processes, no SLURM): a tiny study
with one pretraining row submitted (the run first, its cell by a later call once the run finished), watched with
--status, collected and rendered with the numbers of an in-process report; a cell that fails inside its job, and a
job that crashes, shown failed with their log files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_OVERRIDES
from tests.report.launch.job_calls import crash
from vito.cli import main
from vito.engine.checkpoint import load_checkpoint
from vito.report.build import make_report
from vito.report.launch.cluster import SubmititLauncher, wait_for_submitted
from vito.report.launch.jobs import DONE, FAILED, QUEUED, RUNNING, WAITING, Job
from vito.report.launch.ledger import Ledger
from vito.report.launch.settings import LauncherSettings

pytest.importorskip("submitit")
LOCAL = LauncherSettings(cluster="local", timeout_min=10)
CLASSES = ("bear", "car", "clock", "knife")
TINY = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in TINY_OVERRIDES)}
RUN, RUN_CELL = "runs/vito/seed-0", "cells/vito/seed-0/knn"


@pytest.fixture(scope="module")
def study(tmp_path_factory, shared_data, videos) -> Path:
    """kNN on 4 classes of edge drawings (7 train, 3 val each) for a pretraining row (one seed, the tiny config,
    1 step, on the rendered videos), a random-init ResNet-18 row, and a row whose weights file is broken: its
    cell fails inside its job."""
    root = tmp_path_factory.mktemp("study")
    edges = shared_data / "texture-vs-shape" / "stimuli" / "edges"
    for name in CLASSES:
        for index, image in enumerate(sorted((edges / name).glob("*.png"))):
            split = "train" if index < 7 else "val"
            (root / "edges" / split / name).mkdir(parents=True, exist_ok=True)
            (root / "edges" / split / name / image.name).symlink_to(image)
    (root / "broken.pth").write_bytes(b"not a weights file")
    steps = {"train.max_steps": 1, "train.checkpoint_every": 100, "train.loggers": []}
    suite = {"encoders": {"vito": {"pretrain": {"config": "demo", "data": str(videos), "set": {**TINY, **steps}},
                                   "seeds": [0]},
                          "random": {"encoder": "timm:resnet18", "random_init": True},
                          "broken": {"encoder": "timm:resnet18", "weights": "broken.pth"}},
             "evaluations": {"knn": {"train": "edges/train", "val": "edges/val", "image_size": 64, "k": [5],
                                     "num_workers": 0}},
             "launcher": {"cluster": "local", "timeout_min": 10, "slurm_additional_parameters": {"exclusive": True}}}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return root


def _cells(out: Path) -> dict:
    return {(c["row"], c["evaluation"]): c for c in json.loads((out / "results.json").read_text())["cells"]}


def test_a_study_is_submitted_watched_collected_and_rendered(study: Path, tmp_path: Path, capsys,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, lines = tmp_path / "report", []
    first = make_report(study / "suite.yaml", out, launcher="submitit", echo=lines.append)
    assert {(c.row, c.status) for c in first.pending} == {("vito", WAITING), ("random", QUEUED),
                                                          ("broken", QUEUED)}, lines
    assert not first.computed and not first.failed
    assert {c["status"] for c in _cells(out).values()} == {QUEUED, WAITING}  # rendered, as not computed yet
    ledger = Ledger(out).entries
    assert set(ledger) == {RUN, "cells/random/knn", "cells/broken/knn"}  # the run's cell: not before the run
    assert all(Path(e.log_folder) == out / "jobs" / e.key for e in ledger.values())
    assert any(f"cells/random/knn: submitted job {ledger['cells/random/knn'].job_id}" in line for line in lines)
    assert any(f"{RUN}: submitted job {ledger[RUN].job_id}" in line for line in lines)
    assert "vito seed 0: pretraining queued (runs/vito/seed-0); its cells wait for a later vito report" in lines

    again = make_report(study / "suite.yaml", out, launcher="submitit", echo=lines.append)  # still running
    assert {c.status for c in again.pending} <= {QUEUED, RUNNING, WAITING}
    assert {key: e.job_id for key, e in Ledger(out).entries.items()} == {k: e.job_id for k, e in ledger.items()}
    capsys.readouterr()
    assert main(["report", str(out), "--status"]) in (0, 1)
    watched = capsys.readouterr().out
    assert f"job {ledger[RUN].job_id}" in watched and "3 jobs:" in watched, watched

    wait_for_submitted(timeout_s=240)  # the run has finished: this call submits its cell (broken: not chosen)
    rows = ["vito", "random"]
    collected = make_report(study / "suite.yaml", out, launcher="submitit", only=rows, echo=lines.append)
    assert [(c.label, c.status) for c in collected.pending] == [("vito seed 0 × knn", QUEUED)], lines
    assert not collected.computed and not collected.failed
    assert load_checkpoint(out / RUN)["step"] == 1
    assert Ledger(out).entries[RUN_CELL].job_id not in {e.job_id for e in ledger.values()}

    here = make_report(study / "suite.yaml", tmp_path / "here", only=["random"], echo=lines.append)  # in process,
    assert [c.label for c in here.computed] == ["random × knn"]  # while the run's cell computes in its job
    wait_for_submitted(timeout_s=240)
    done = make_report(study / "suite.yaml", out, launcher="submitit", only=rows, echo=lines.append)
    assert not done.pending and not done.computed and not done.failed, lines
    cells = _cells(out)
    assert {cells[(row, "knn")]["status"] for row in rows} == {"cached"}
    assert cells[("broken", "knn")]["status"] == FAILED  # its job's error.json, not resubmitted (--only)
    vito_row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| **vito**"))
    assert f"{100 * cells[('vito', 'knn')]['metrics']['top1_k5']:.1f}" in vito_row, vito_row
    assert cells[("random", "knn")]["metrics"] == _cells(tmp_path / "here")[("random", "knn")]["metrics"]

    capsys.readouterr()
    assert main(["report", str(study / "suite.yaml"), "--out", str(out), "--status"]) == 1  # a failed job
    status = capsys.readouterr().out
    broken = Ledger(out).entries["cells/broken/knn"]
    assert f"failed   {'cells/broken/knn':<21}  job {broken.job_id}" in status and broken.stderr in status, status
    assert "broken.pth" in status  # the cell's error, under its line
    for key in (RUN, RUN_CELL, "cells/random/knn"):
        assert f"done     {key:<21}  job {Ledger(out).entries[key].job_id}" in status, status
    assert status.strip().splitlines()[-1] == "4 jobs: 0 queued, 0 running, 3 done, 1 failed"


def test_a_dry_run_names_the_jobs_already_queued_or_running_and_writes_nothing(study: Path, tmp_path: Path) -> None:
    """The ledger says the run's and the random row's jobs are running (their job id: a live process, this one):
    the dry run says so instead of "would compute", and leaves the ledger as it was."""
    import os

    from vito.report.launch.ledger import Entry

    out = tmp_path / "report"
    ledger = Ledger(out)
    for key in (RUN, "cells/random/knn"):
        ledger.add(Entry(key, str(os.getpid()), "local", str(out / key), str(out / "jobs" / key), "o", "e", QUEUED,
                         0.0))
    before, lines = ledger.path.read_bytes(), []
    make_report(study / "suite.yaml", out, launcher="submitit", dry_run=True, echo=lines.append)
    assert "vito seed 0: pretraining in its job (runs/vito/seed-0: queued or running)" in lines, lines
    assert f"vito seed 0 × knn: would compute (after its pretraining run) -> {out / RUN_CELL}" in lines
    assert f"random × knn: computing in its job (queued or running) -> {out / 'cells/random/knn'}" in lines
    assert f"broken × knn: would compute -> {out / 'cells/broken/knn'}" in lines
    assert ledger.path.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["jobs"]


def test_a_crashing_job_is_failed_with_its_log_and_submitted_again(tmp_path: Path, capsys) -> None:
    launcher = SubmititLauncher(tmp_path, LOCAL, echo=lambda _: None)
    job = Job("runs/r/seed-0", tmp_path / "runs" / "r" / "seed-0", crash)
    assert launcher.submit(job) == QUEUED
    assert launcher.submit(job) in (QUEUED, RUNNING)  # never twice while it is queued or running
    assert launcher.submit(Job("cells/r/knn", tmp_path / "c", crash, depends_on=("runs/r/seed-0",))) == "waiting"
    wait_for_submitted(timeout_s=120)
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--status"]) == 1
    status = capsys.readouterr().out
    entry = Ledger(tmp_path).entries["runs/r/seed-0"]
    assert entry.state == QUEUED  # --status only looks: the ledger is not written
    assert f"failed   runs/r/seed-0  job {entry.job_id}" in status and entry.stderr in status, status
    assert "RuntimeError: the node ran out of luck" in status
    assert "RuntimeError: the node ran out of luck" in Path(entry.stderr).read_text()

    rerun = SubmititLauncher(tmp_path, LOCAL, echo=lambda _: None)  # collects: failed, so submitted again
    assert rerun.ledger.entries["runs/r/seed-0"].state == FAILED
    assert rerun.submit(job) == QUEUED and rerun.ledger.entries["runs/r/seed-0"].job_id != entry.job_id
    wait_for_submitted(timeout_s=120)


def test_status_of_a_folder_without_jobs_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path), "--status"]) == 2
    assert "no jobs were submitted here" in capsys.readouterr().err


@pytest.mark.parametrize(("slurm", "result", "expected"), [
    ("PENDING", None, (QUEUED, None)),
    ("REQUEUED", "error", (QUEUED, None)),  # SLURM requeued it itself (preemption): an earlier attempt's error
    ("RUNNING", None, (RUNNING, None)),
    ("COMPLETED", "success", (DONE, None)),
    ("FAILED", "error", (FAILED, "RuntimeError: boom")),
    ("OUT_OF_MEMORY", None, (FAILED, "SLURM state OUT_OF_MEMORY, no result (see e.err)")),
    ("UNKNOWN", None, ("running", "earlier")),  # not in sacct yet: what the ledger said
])
def test_slurm_job_states(tmp_path: Path, monkeypatch, slurm, result, expected) -> None:
    from submitit.core.utils import JobPaths, cloudpickle_dump

    from vito.report.launch import cluster
    from vito.report.launch.ledger import Entry

    monkeypatch.setattr(cluster, "_slurm_state", lambda entry: slurm)
    entry = Entry("cells/a/knn", "77", "slurm", str(tmp_path), str(tmp_path), "e.out", "e.err", RUNNING, 0.0,
                  "earlier")
    if result is not None:
        cloudpickle_dump((result, "Traceback ...\nRuntimeError: boom\n" if result == "error" else None),
                         JobPaths(tmp_path, "77", 0).result_pickle)
    assert cluster.job_state(entry) == expected
