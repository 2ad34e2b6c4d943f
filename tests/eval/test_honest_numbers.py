"""Numbers a new user can trust: partial data flagged, like compared with like, protocols recorded."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vito.cli import main
from vito.eval.core.base import read_result
from vito.eval.human import model_vs_human as human
from vito.eval.video import ucf101


def _responses(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_humans_are_scored_on_the_trials_the_model_saw(shared_data) -> None:
    subjects = human.load_human_data(shared_data / "model-vs-human" / "raw-data" / "edge")["edge"]
    first = next(iter(subjects.values()))
    seen = dict(list(first.items())[:40])  # a partial stimulus set: 40 of 160 images
    model = {i: human.Trial(i, t.category, "dog", t.condition) for i, t in seen.items()}
    scored = human.score_dataset(model, subjects, "edge")
    on_seen = {name: {i: t for i, t in session.items() if i in seen} for name, session in subjects.items()}
    reference = human.humans_row(human.human_pairs(on_seen, human.EXCLUDED_CONDITIONS.get("edge", ())))
    assert scored["humans"]["error_consistency"] == pytest.approx(reference["error_consistency"])
    everything = human.humans_row(human.human_pairs(subjects, ()))
    assert scored["humans"]["accuracy"] != pytest.approx(everything["accuracy"])  # not all 160 trials
    assert scored["trials_compared"] == 40 and scored["human_trials"] == 160


def test_a_partial_responses_set_over_several_datasets_is_flagged(shared_data, tmp_path) -> None:
    raw = shared_data / "model-vs-human" / "raw-data"
    rows = human.read_response_rows(sorted((raw / "edge").glob("*.csv"))[0])[:50]
    path = _responses(tmp_path / "mine.csv", [{**r, "subj": "mine", "object_response": "dog"} for r in rows])
    datasets = "edge,cue-conflict,low-pass,uniform-noise"
    assert main(["eval", "model-vs-human", "--responses", str(path), "--raw-data", str(raw), "--datasets", datasets,
                 "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert result.settings["datasets"] == datasets.split(",") and result.coverage.partial
    assert "no trials for" in result.coverage.note
    assert 0 <= result.value("accuracy") <= 1
    labels = [row["decision maker"] for row in result.tables["decision makers"]]
    assert labels[0].startswith("mine (") and any(label.startswith("humans, subject pairs") for label in labels)


def test_a_complete_responses_file_is_not_partial_where_conditions_are_excluded(shared_data, tmp_path) -> None:
    """low-pass leaves 3 of its 8 conditions out of every metric: they count neither as used nor as expected."""
    raw = shared_data / "model-vs-human" / "raw-data"
    responses = sorted((raw / "low-pass").glob("*.csv"))[0]
    assert main(["eval", "model-vs-human", "--responses", str(responses), "--raw-data", str(raw),
                 "--datasets", "low-pass", "--out", str(tmp_path)]) == 0
    coverage = read_result(tmp_path).coverage
    assert not coverage.partial and coverage.used == coverage.expected == 800  # 5 of 8 conditions x 160


def test_several_datasets_in_one_call(shared_data, tmp_path) -> None:
    raw = shared_data / "model-vs-human" / "raw-data"
    datasets = ["edge", "cue-conflict", "low-pass", "uniform-noise"]
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(raw), "--datasets", ",".join(datasets),
                 "--out", str(tmp_path)]) == 0
    result = read_result(tmp_path)
    assert result.settings["datasets_scored"] == sorted(datasets)
    assert [row["dataset"] for row in result.tables["per dataset"]] == sorted(datasets)
    assert not result.coverage.partial
    humans = human.load_human_data(raw, datasets)
    assert result.coverage.used == sum(len(human.scored_trials(subjects, human.EXCLUDED_CONDITIONS.get(name, ())))
                                       for name, subjects in humans.items()) > 0  # every human trial, not 0 of 0
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(raw), "--datasets", "edge,nonsense",
                 "--out", str(tmp_path / "bad")]) == 2


def test_ucf101_runs_several_splits_and_reports_mean_and_sd(monkeypatch, tmp_path) -> None:
    accuracy = {1: 0.5, 2: 0.7, 3: 0.6}

    def fake(encoder, settings, split, out_dir):
        return {"split": split, "top1": accuracy[split], "top5": 1.0, "train_videos": 4, "test_videos": 2,
                "listed_test_videos": 2, "skipped_videos": {"train": [], "test": []}, "history": [], "seconds": 1.0}

    monkeypatch.setattr(ucf101, "run_ucf101", fake)
    settings = ucf101.UCF101Settings(root=tmp_path, splits=tmp_path, split=[1, 2, 3])
    result = ucf101.UCF101().run(object(), settings, tmp_path)
    assert result.value("top1") == pytest.approx(0.6) and result.value("top1_sd") == pytest.approx(0.1)
    assert [row["split"] for row in result.tables["per split"]] == [1, 2, 3]


def _image_folder(root: Path, shared_data: Path) -> Path:
    sources = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))[:4]
    for i, source in enumerate(sources):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / f"c{i % 2}" / source.name)
    return root


def test_linear_probe_offers_the_byol_protocol_and_records_it(shared_data, tmp_path) -> None:
    from vito.eval.probes.linear import AugmentedView

    data = _image_folder(tmp_path / "data", shared_data)
    common = ["--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train", str(data), "--val",
              str(data), "--image-size", "32", "--num-workers", "0", "--lrs", "0.1", "0.05", "--epochs", "2",
              "--probe-batch-size", "2"]
    assert main(["eval", "linear", *common, "--protocol", "byol", "--out", str(tmp_path / "byol")]) == 0
    byol = read_result(tmp_path / "byol")
    assert byol.settings["protocol"] == "byol" and len(byol.tables["lr sweep"]) == 2
    assert (tmp_path / "byol" / "linear_head.pt").is_file()
    view = AugmentedView(32, seed=0)
    image = np.asarray(Image.open(next(data.rglob("*.JPEG"))).convert("RGB"))
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)
    assert not torch.equal(view(tensor), view(tensor))  # a new crop (and maybe flip) at every call


def test_knn_reports_several_k(shared_data, tmp_path) -> None:
    data = _image_folder(tmp_path / "data", shared_data)
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train",
                 str(data), "--val", str(data), "--image-size", "32", "--num-workers", "0",
                 "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert [row["k"] for row in result.tables["accuracy per k"]] == [10, 20, 100, 200]
    assert {"top1_k10", "top1_k20", "top1_k100", "top1_k200"} <= set(result.metrics)
    assert result.metrics["top1"].label == "top-1 (k=20)"


def test_attention_on_a_run_without_attention_pooling_says_so(tmp_path, capsys) -> None:
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention=false"])
    save_checkpoint(tmp_path / "run", {"format": "vito-checkpoint/1", "step": 1, "config": config.to_dict(),
                                       "model": Vito(config.model, config.loss).state_dict(), "optimizer": {},
                                       "rng": {}, "data": {}})
    Image.new("RGB", (40, 40), (20, 200, 90)).save(tmp_path / "x.png")
    assert main(["attention", "--encoder", str(tmp_path / "run"), str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "o"), "--image-size", "32", "--device", "cpu"]) == 2
    assert "average pooling" in capsys.readouterr().err
