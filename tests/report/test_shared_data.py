"""`vito report` end to end on the shared sample data, against the standalone `vito eval` commands.

Two small encoders (a tiny vito checkpoint made here and timm's ResNet-18 at its seeded random initialisation),
three cheap evaluations: kNN on the texture-vs-shape edge stimuli split per class into train/val (symlinks),
DAVIS (tiny propagation for the encoders; scoring of the OSVOS results as a reference row), model-vs-human
(the encoders on the edge stimuli; a human subject's responses file as a reference row).
"""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from vito.cli import main
from vito.eval.core.result import Result, read_result
from vito.report.document import table_value

TRAIN_PER_CLASS = 7  # of the 10 edge drawings per class; the other 3 are the validation images
CLASSES = ("bear", "car", "clock", "knife")  # 4 of the 16 classes: 40 images keep the test short


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data) -> dict:
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.eval.probes.heads import save_linear_head
    from vito.models.vito import Vito

    root = tmp_path_factory.mktemp("report-shared")
    torch.manual_seed(1)  # not timm's random-init seed (0): the vito row must be another network
    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention_hidden=8"])
    save_checkpoint(root / "run", {"format": "vito-checkpoint/1", "step": 1, "config": config.to_dict(),
                                   "model": Vito(config.model, config.loss).state_dict(), "optimizer": {},
                                   "rng": {}, "data": {}})
    save_linear_head(root / "vito_head.pt", nn.Linear(512, 1000), {"classes": []})  # an ImageNet-shaped head
    edges = shared_data / "texture-vs-shape" / "stimuli" / "edges"
    for name in CLASSES:
        for index, image in enumerate(sorted((edges / name).glob("*.png"))):
            split = "train" if index < TRAIN_PER_CLASS else "val"
            (root / "edges" / split / name).mkdir(parents=True, exist_ok=True)
            (root / "edges" / split / name / image.name).symlink_to(image)
    davis = shared_data / "davis2016_sample"
    raw = shared_data / "model-vs-human" / "raw-data" / "edge"
    suite = {
        "encoders": {"vito": {"encoder": "run", "classifier": "vito_head.pt"},
                     "random": {"encoder": "timm:resnet18", "random_init": True}},
        "evaluations": {
            "knn": {"train": "edges/train", "val": "edges/val", "image_size": 64, "k": [5, 20], "num_workers": 0},
            "davis": {"davis_root": str(davis), "sequences": ["car-shadow"], "max_frames": 3, "short_side": 48},
            # the stimuli of 4 classes: 40 of the 160 trials, a partial cell
            "model-vs-human": {"raw_data": str(raw), "stimuli": "edges", "datasets": ["edge"],
                               "image_size": 64},
        },
        "references": {
            "OSVOS": {"davis": {"results": str(davis / "Results" / "osvos-davis2017"), "max_frames": None,
                                "short_side": None}},
            "subject-01": {"model-vs-human": {"responses": str(raw / "edge_subject-01_session_1.csv"),
                                              "stimuli": None, "image_size": None}},
        },
    }
    (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return {"root": root, "suite": suite, "davis": davis, "raw": raw}


def _cells(out: Path) -> dict:
    return {(c["row"], c["evaluation"]): c for c in json.loads((out / "results.json").read_text())["cells"]}


def _row_line(markdown: str, row: str, evaluation_header: str) -> str:
    """The markdown row of ``row`` in the table whose header names ``evaluation_header``."""
    table = markdown.split(evaluation_header, 1)[1].split("\n\n", 1)[0]
    return next(line for line in table.splitlines() if f"{row}*" in line)


def _assert_shown(out: Path, row: str, result: Result) -> None:
    """The report's three outputs show the standalone Result's numbers (exactly in JSON and HTML data-value)."""
    cell = _cells(out)[(row, result.evaluation)]
    assert cell["metrics"] == {name: metric.value for name, metric in result.metrics.items()}
    markdown, page = (out / "report.md").read_text(), (out / "index.html").read_text()
    line = _row_line(markdown, row, f"{result.evaluation} · ")
    document = json.loads((out / "results.json").read_text())
    shown = [column["metric"] for group in document["groups"] for entry in group["evaluations"]
             if entry["entry"] == result.evaluation for column in entry["columns"]]  # the headline by default
    assert shown and set(shown) <= set(result.metrics)
    for name in shown:
        metric = result.metrics[name]
        assert f" {table_value(metric.value, metric.kind)} " in line, (name, line)
        if metric.value is not None:
            assert f'data-value="{metric.value!r}"' in page, name


def test_report_matches_standalone_commands_and_reruns_only_new_cells(setup, tmp_path, capsys) -> None:
    root, suite, davis, raw = setup["root"], setup["suite"], setup["davis"], setup["raw"]
    out = tmp_path / "report"
    # A cell computed beforehand by `vito eval ... --out REPORT/cells/ROW/EVAL` (as under torchrun) is reused.
    assert main(["eval", "davis", "--davis-root", str(davis), "--results", str(davis / "Results/osvos-davis2017"),
                 "--sequences", "car-shadow", "--out", str(out / "cells/OSVOS/davis")]) == 0
    assert main(["report", str(root / "suite.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "7 cells computed, 1 reused, 0 failed" in printed
    cells = _cells(out)
    assert cells[("OSVOS", "davis")]["status"] == "cached"
    assert {c["status"] for key, c in cells.items() if key != ("OSVOS", "davis")} == {"computed"}

    standalone = tmp_path / "standalone"
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--train", str(root / "edges/train"),
                 "--val", str(root / "edges/val"), "--image-size", "64", "--k", "5", "20", "--num-workers", "0",
                 "--out", str(standalone / "knn")]) == 0
    assert main(["eval", "model-vs-human", "--responses", str(raw / "edge_subject-01_session_1.csv"),
                 "--raw-data", str(raw), "--datasets", "edge", "--out", str(standalone / "mvh")]) == 0
    _assert_shown(out, "random", read_result(standalone / "knn"))
    _assert_shown(out, "subject-01", read_result(standalone / "mvh"))
    _assert_shown(out, "OSVOS", read_result(out / "cells/OSVOS/davis"))
    assert cells[("vito", "model-vs-human")]["settings"]["classifier"] == str(root / "vito_head.pt")
    assert cells[("random", "knn")]["coverage"]["used"] == cells[("random", "knn")]["coverage"]["expected"] == 40
    for row, evaluation in [("random", "davis"), ("vito", "model-vs-human")]:  # 1 of 38 frames; 40 of 160 trials
        assert cells[(row, evaluation)]["coverage"]["partial"]
        assert "†" in _row_line((out / "report.md").read_text(), row, f"{evaluation} · ")

    # One more encoder and a reference row with a bad data root: only those cells run; the bad one is marked.
    suite = {**suite, "encoders": {**suite["encoders"], "tv": {"encoder": "torchvision:resnet18", "random_init": True}},
             "references": {**suite["references"],
                            "broken": {"davis": {"davis_root": str(tmp_path / "no-davis-here"),
                                                 "results": str(davis / "Results/osvos-davis2017")}}}}
    (root / "suite3.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))  # beside: same relative paths
    capsys.readouterr()
    assert main(["report", str(root / "suite3.yaml"), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    computing = re.findall(r"^(\S+) × (\S+): computing", printed, re.MULTILINE)
    assert sorted(computing) == [("broken", "davis"), ("tv", "davis"), ("tv", "knn"), ("tv", "model-vs-human")]
    assert "3 cells computed, 8 reused, 1 failed" in printed
    broken = _cells(out)[("broken", "davis")]
    assert broken["status"] == "failed" and "no-davis-here" in broken["error"]
    assert "no-davis-here" in (out / "report.md").read_text() and 'class="failed"' in (out / "index.html").read_text()
