"""Studies in `vito report`: pretraining rows with seeds (trained for real: ResNet-18, 32 px, 2 steps, on the
rendered videos), mean ± sd, plots, named entries, and the refusals of bad studies before anything runs."""

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_OVERRIDES
from vito.cli import main
from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.report.build import make_report
from vito.report.runs import ForeignRun, PretrainStopped
from vito.report.suite import STUDIES_DIR, load_suite

TINY = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in TINY_OVERRIDES)}
STEPS = {"train.max_steps": 1, "train.checkpoint_every": 100, "train.loggers": []}


def _row(videos: Path, seeds: list, **changes) -> dict:
    return {"pretrain": {"config": "demo", "data": str(videos), "set": {**TINY, **STEPS, **changes}}, "seeds": seeds}


def _study(tmp_path: Path, encoders: dict, evaluations: dict | None = None, **extra) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    study = {"encoders": encoders, "evaluations": evaluations or {"knn": {"train": "data"}}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False, allow_unicode=True))
    return path


def _document(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_a_study_trains_each_seed_shows_mean_sd_and_plots_and_a_rerun_computes_nothing(
        tmp_path, videos, fakes, monkeypatch) -> None:
    from vito.eval.core.registry import REGISTRY

    monkeypatch.setattr(REGISTRY["knn"], "headline", "top1", raising=False)  # the evaluation's headline metric
    study = _study(tmp_path, {
        "crop 0.08": _row(videos, [0, 1], **{"data.crop_min_scale": 0.08}),
        "crop 0.4": _row(videos, [0, 1]),  # no set: of the key; its x is the preset's 0.4
        "random": {"encoder": "timm:resnet18", "random_init": True},
    }, {"knn-20": {"evaluation": "knn", "train": "data"}, "knn-5": {"evaluation": "knn", "train": "data", "k": 5}},
        plots={"crop scale": {"rows": ["crop 0.08", "crop 0.4"], "x": "data.crop_min_scale",
                              "metric": "knn-20.top1", "references": ["random"]}},
        columns={"knn-5": ["knn-5.top1", "count"]})
    out = tmp_path / "study"
    printed = []
    run = make_report(study, out, echo=printed.append)
    assert not run.failed and not run.plot_errors
    for row in ("crop-0.08", "crop-0.4"):
        for seed in (0, 1):
            checkpoint = load_checkpoint(out / "runs" / row / f"seed-{seed}")
            assert checkpoint["step"] == 1 and checkpoint["config"]["train"]["seed"] == seed
            assert (out / "cells" / row / f"seed-{seed}" / "knn-20" / "result.json").is_file()
    assert load_checkpoint(out / "runs" / "crop-0.08" / "seed-0")["config"]["data"]["crop_min_scale"] == 0.08
    assert len(fakes.calls.of("knn")) == 2 * 5  # two entries × (4 seeds' encoders + the random row)

    document = _document(out)
    aggregate = next(a for a in document["aggregates"] if a["row"] == "crop 0.08" and a["entry"] == "knn-20")
    values = aggregate["values"]["top1"]
    seeds = {c["seed"]: c["metrics"]["top1"] for c in document["cells"]
             if c["row"] == "crop 0.08" and c["entry"] == "knn-20"}
    assert values == [seeds[0], seeds[1]] and aggregate["metrics"]["top1"] == pytest.approx(sum(values) / 2)
    assert aggregate["sd"]["top1"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    markdown = (out / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| encoder |"))
    assert header == "| encoder | knn-20 · top-1 (%) | knn-5 · top-1 (%) | knn-5 · images (count) |"
    row = next(line for line in markdown.splitlines() if line.startswith("| **crop 0.08**"))
    assert "(mean ± sd over 2 seeds; data.crop_min_scale=0.08)" in row  # what differs from the other rows
    assert f"{100 * aggregate['metrics']['top1']:.1f} ± " in row
    assert "seeds)" not in markdown.replace("over 2 seeds)", "")  # never "mean of 1 seeds"
    plot = document["plots"][0]
    assert [p["x"] for p in plot["points"]] == [0.08, 0.4] and plot["lines"][0]["label"] == "random"
    assert plot["points"][0]["mean"] == pytest.approx(100 * aggregate["metrics"]["top1"])
    assert (out / plot["png"]).read_bytes().startswith(b"\x89PNG") and "<svg" in (out / plot["svg"]).read_text()
    assert 'src="data:image/png;base64,' in (out / "index.html").read_text().split('id="plots"')[1]

    fakes.calls.clear()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("last.pt")}
    printed.clear()
    again = make_report(study, out, echo=printed.append)
    assert not again.computed and fakes.calls == [] and not any("pretraining" in line for line in printed[:-1])
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("last.pt")} == stamps

    # the study changed under its runs: refused before anything runs, naming the folder and the key
    study.write_text(study.read_text().replace("data.crop_min_scale: 0.08", "data.crop_min_scale: 0.1"))
    with pytest.raises(ForeignRun, match=r"runs/crop-0\.08/seed-0 holds another run .*data\.crop_min_scale "
                                         r"cannot change .*--overwrite"):
        make_report(study, out, echo=printed.append)
    assert fakes.calls == [] and {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("last.pt")} == stamps
    run = make_report(study, out, echo=printed.append, overwrite=True, only=["crop 0.08"])
    assert load_checkpoint(out / "runs" / "crop-0.08" / "seed-1")["config"]["data"]["crop_min_scale"] == 0.1
    assert len(run.computed) == 4  # both entries of both seeds: new encoders


def test_a_run_stopped_mid_way_resumes_and_counts_only_when_finished(tmp_path, videos, fakes, monkeypatch) -> None:
    from tests.pretrain.test_loop import _interrupt_during_step

    study = _study(tmp_path, {"vito": _row(videos, [3], **{"train.max_steps": 4})})
    out = tmp_path / "study"
    printed = []
    make_report(study, out, dry_run=True, echo=printed.append)
    assert "vito seed 3: would start the pretraining run" in printed[0] and not out.exists()
    with monkeypatch.context() as patch:
        _interrupt_during_step(patch, step=2)
        with pytest.raises(PretrainStopped, match="SIGTERM stopped the pretraining run .* at step 2"):
            make_report(study, out, echo=lambda _: None)
    assert fakes.calls == [] and not (out / "cells").exists()
    printed.clear()
    make_report(study, out, echo=printed.append)
    assert "vito seed 3: pretraining (resume)" in "\n".join(printed)
    lines = [json.loads(line) for line in (out / "runs" / "vito" / "seed-3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and len(fakes.calls.of("knn")) == 1
    # the same row on other data is another run: refused, naming the folder, before anything runs
    other = tmp_path / "other"
    other.mkdir()
    study.write_text(study.read_text().replace(str(videos), str(other)))
    with pytest.raises(ForeignRun, match=r"runs/vito/seed-3 holds another run than vito seed 3 .*is not the data"):
        make_report(study, out, echo=lambda _: None)


def test_a_row_whose_data_is_unusable_fails_its_cells_and_the_others_complete(tmp_path, videos, fakes, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.mp4").write_bytes(b"not a video")
    (broken / "b.mp4").write_bytes(b"")
    study = _study(tmp_path, {"broken": _row(broken, [0, 1]), "random": {"encoder": "timm:resnet18",
                                                                        "random_init": True}})
    assert main(["report", str(study), "--out", str(tmp_path / "out")]) == 1
    document = _document(tmp_path / "out")
    failed = [c for c in document["cells"] if c["row"] == "broken"]
    assert len(failed) == 2 and all(c["error"].startswith("its pretraining run failed: ") for c in failed)
    assert [r["seed"] for r in document["failed_runs"]] == [0, 1]
    row = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
               if line.startswith("| **broken**"))
    assert "n/a ✗" in row and len(fakes.calls.of("knn")) == 1  # the random row's cell


@pytest.mark.parametrize(("rows", "extra", "message"), [
    ({"a": {"pretrian": {}}}, {}, "encoders.a: unknown key 'pretrian'"),
    ({"a": {"pretrain": {"config": "demo", "data": "data", "set": {"data.crop_min_scal": 0.1}}}}, {},
     "encoders.a.pretrain: .*unknown key 'data.crop_min_scal'"),
    ({"a": {"pretrain": {"config": "demo", "data": "data", "set": {"train.seed": 1}}}}, {}, "seeds: \\[...\\]"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}, "seeds": [0, 1, 0]}}, {}, "seed 0 is given twice"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}, "seeds": [0, "1"]}}, {}, "'1' is not a seed"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}, "seeds": [1.5]}}, {}, "1.5 is not a seed"),
    ({"a": {"pretrain": {"config": "demo", "data": "nowhere"}}}, {}, "pretrain.data: .*nowhere does not exist"),
    ({"a": {"pretrain": {"config": "vito_r5", "data": "data"}}}, {}, "neither a file nor a preset"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}}},
     {"plots": {"p": {"rows": ["b"], "x": "data.crop_min_scale", "metric": "knn.top1"}}}, "no row named 'b'"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}}},
     {"plots": {"p": {"rows": ["a"], "x": "data.crop", "metric": "knn.top1"}}}, "'data.crop' is not a config key"),
    ({"a": {"pretrain": {"config": "demo", "data": "data"}}},
     {"plots": {"p": {"rows": ["a"], "x": "data.crop_min_scale", "metric": "voc.mIoU"}}},
     "'voc' is not one of the suite's evaluation entries"),
    ({"a": {"encoder": "timm:resnet18", "random_init": True}},
     {"plots": {"p": {"rows": ["a"], "x": "data.crop_min_scale", "metric": "knn.top1"}}},
     "'a' is not a pretraining row"),
    ({"a": {"encoder": "timm:resnet18", "random_init": True}},
     {"evaluations": {"k": {"evaluation": "knnn", "train": "data"}}}, "evaluations.k: no such evaluation 'knnn'"),
    ({"a": {"encoder": "timm:resnet18", "random_init": True}},
     {"evaluations": {"k.1": {"evaluation": "knn", "train": "data"}}}, "an entry name is letters"),
])
def test_a_bad_study_is_refused_before_anything_runs(tmp_path, fakes, capsys, rows, extra, message) -> None:
    study = _study(tmp_path, rows, **extra)
    assert main(["report", str(study), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    import re
    assert re.search(message, error) and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists() and fakes.calls == []


def test_a_plot_of_a_metric_no_entry_produces_is_one_line_and_status_1(tmp_path, fakes,
                                                                          capsys) -> None:
    study = _study(tmp_path, {"a+": {"encoder": "timm:resnet18", "random_init": True}},
                   plots={"p": {"rows": ["a+"], "x": "row", "metric": "knn.mIoU"}})
    assert main(["report", str(study), "--out", str(tmp_path / "out")]) == 1
    assert "plot not drawn: " in capsys.readouterr().out
    plot = _document(tmp_path / "out")["plots"][0]
    assert plot["png"] is None and plot["error"].endswith("knn has no metric 'mIoU' (it has: count, top1, top1_k)")
    assert (tmp_path / "out" / "cells" / "a" / "knn" / "result.json").is_file()  # 'a+': a folder-safe name


@pytest.mark.parametrize("preset", sorted(STUDIES_DIR.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_study_parses(preset, tmp_path, monkeypatch) -> None:
    """Each preset reads (keys, set: values, seeds, entries, plots) with placeholder data paths: their existence
    is checked when a report starts."""
    suite = load_suite(preset)
    assert suite.evaluations and suite.row_names


def test_a_run_and_a_cell_are_plain_picklable_jobs(tmp_path, videos, fakes) -> None:
    """train_run(RunCell) and compute_cell(Cell) each take one picklable object (a launcher sends them away)."""
    import pickle

    from vito.report.grid import plan_cells
    from vito.report.runs import plan_runs

    suite = load_suite(_study(tmp_path, {"DeepLabV3+": _row(videos, [0])}))
    runs = plan_runs(suite.pretrain_rows, {"DeepLabV3+": "DeepLabV3"}, tmp_path / "out")
    cells = plan_cells(suite, tmp_path / "out")
    assert [run.folder for run in runs] == [tmp_path / "out" / "runs" / "DeepLabV3" / "seed-0"]
    assert [cell.folder for cell in cells] == [tmp_path / "out" / "cells" / "DeepLabV3" / "seed-0" / "knn"]
    assert pickle.loads(pickle.dumps(runs[0])) == runs[0]
    assert pickle.loads(pickle.dumps(cells[0])).encoder.spec.encoder == str(runs[0].folder)


def test_a_second_report_into_a_study_folder_in_use_is_refused_before_training(tmp_path, videos, fakes) -> None:
    import os
    import socket

    study = _study(tmp_path, {"vito": _row(videos, [0])})
    out = tmp_path / "study"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "kind": "report"}))
    with pytest.raises(VitoError, match="is in use by the run of process"):
        make_report(study, out, echo=lambda _: None)
    assert not (out / "runs").exists() and fakes.calls == []
