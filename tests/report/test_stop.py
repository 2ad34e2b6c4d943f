"""`vito report` under a scheduler's stop: SIGTERM to the whole process group during a cell's fine-tune stops the
report (exit 143, no further cell), and the rerun continues that fine-tune (a report owns its cells' runs; that a
resumed fine-tune equals an uninterrupted one is the fine-tune loop's test, tests/engine/test_finetune.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from tests.eval.dense.segmentation.layouts import VOC_IDS, build_voc
from tests.eval.probes.helpers import image_folder

RUN = Path("cells") / "a" / "segment" / "runs" / "lr0.01_seed0"


def _report(suite: Path, out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vito", "report", str(suite), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_sigterm_during_a_fine_tune_cell_stops_the_report_and_the_rerun_resumes_it(shared_data, tmp_path) -> None:
    root = build_voc(shared_data, tmp_path, splits={"val": VOC_IDS, "trainaug": VOC_IDS})
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "encoders": {"a": {"encoder": "timm:resnet18", "random_init": True, "device": "cpu"}},
        "evaluations": {
            "segment": {"dataset": "voc", "root": str(root), "iters": 20, "lrs": [0.01], "seeds": [0],
                        "batch_size": 2, "crop_size": 33, "num_workers": 0, "checkpoint_every": 100, "pictures": 0},
            "knn": {"train": str(image_folder(tmp_path / "images", shared_data)), "val": str(tmp_path / "images"),
                    "image_size": 32, "num_workers": 0}},
    }, sort_keys=False))
    out = tmp_path / "stopped"
    report = _report(suite, out, start_new_session=True)
    metrics, deadline = out / RUN / "metrics.jsonl", time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and report.poll() is None:
        assert time.monotonic() < deadline, "the fine-tune logged nothing"
        time.sleep(0.05)
    os.killpg(report.pid, signal.SIGTERM)
    _, stderr = report.communicate(timeout=300)
    assert report.returncode == 143, stderr[-2000:]
    assert not (out / "cells" / "a" / "knn").exists() and not (out / "index.html").exists()  # no further cell

    checkpoint = torch.load(out / RUN / "checkpoints" / "last.pt", weights_only=True)
    assert 10 <= checkpoint["step"] < 20  # the step in flight was finished and saved

    rerun = _report(suite, out)  # before: refused ("already holds a run; continue it with --resume ...")
    assert rerun.wait(timeout=600) == 0, rerun.communicate()[1][-2000:]
    assert torch.load(out / RUN / "checkpoints" / "last.pt", weights_only=True)["step"] == 20
    assert (out / "cells" / "a" / "knn" / "result.json").is_file() and (out / "index.html").is_file()
