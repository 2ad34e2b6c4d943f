"""Numbers a new user can trust: partial data flagged, like compared with like, protocols recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vito.cli import main
from vito.eval.core.result import read_result
from vito.eval.video import ucf101


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
