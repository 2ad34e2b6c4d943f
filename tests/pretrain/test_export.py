"""``vito export``: every format loads back strictly, a timm-hub folder loads in timm offline, kNN on an export
equals kNN on the run, and bad destinations are refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vito.cli import main
from vito.errors import VitoError
from vito.eval.core.encoders import load_encoder
from vito.pretrain.export import export

SMALL = ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16", "model.attention_hidden=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder whose checkpoint (step 7) holds a randomly initialised small VITO model."""
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    folder = tmp_path_factory.mktemp("export") / "run"
    config = load_config(None, SMALL)
    torch.manual_seed(0)
    save_checkpoint(folder, {"format": "vito-checkpoint/1", "step": 7, "config": config.to_dict(),
                             "model": Vito(config.model, config.loss).state_dict(), "optimizer": {}, "rng": {},
                             "data": {}})
    return folder


@pytest.fixture(scope="module")
def exported(run: Path) -> dict[str, tuple[Path, list[str]]]:
    """``vito export`` of ``run`` to each format vito's evaluation reads: format -> (path, printed lines)."""
    import contextlib
    import io

    folder = run.parent / "exports"
    paths = {}
    for fmt, name in [("timm", "encoder.pt"), ("safetensors", "encoder.safetensors"), ("timm-hub", "hub")]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["export", str(run), "--format", fmt, "--out", str(folder / name)]) == 0
        paths[fmt] = (folder / name, printed.getvalue().splitlines())
    return paths


def _same_features(path: Path, run: Path) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    exported, trained = load_encoder(path), load_encoder(run)
    for stage in (-2, -1):
        assert torch.allclose(exported.feature_maps(images, [stage])[0], trained.feature_maps(images, [stage])[0],
                              atol=1e-5)
    assert exported.classifier is None


def test_safetensors_export_is_headless_timm_with_provenance(run: Path, exported) -> None:
    path, printed = exported["safetensors"]
    assert printed == [f"wrote {path}", "resnet18 encoder of step 7; load it with: timm.create_model('resnet18', "
                       f"num_classes=0).load_state_dict(safetensors.torch.load_file('{path}'))"]
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict(load_file(str(path)), strict=True)  # every key, no head of zeros
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "pt" and meta["vito.architecture"] == "resnet18" and meta["vito.step"] == "7"
    assert meta["vito.run"] == str((run / "checkpoints" / "last.pt").resolve())
    assert len(meta["vito.config_sha256"]) == 64


def test_timm_hub_folder_loads_with_timm_in_a_fresh_offline_process(run: Path, exported, tmp_path: Path) -> None:
    folder, printed = exported["timm-hub"]
    assert printed[:2] == [f"wrote {folder / 'model.safetensors'}", f"wrote {folder / 'config.json'}"]
    assert printed[2].endswith(f"load it with: timm.create_model('local-dir:{folder}', pretrained=True)")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 0 and config["num_features"] == 512
    assert config["pretrained_cfg"]["num_classes"] == 0 and config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    assert "tag" not in config["pretrained_cfg"]  # timm's own weights' tag would misname ours
    assert config["vito"]["step"] == 7 and [f["reduction"] for f in config["vito"]["feature_info"]] == [2, 4, 8, 16, 32]
    script = textwrap.dedent(f"""
        import timm, torch
        from safetensors.torch import load_file
        model = timm.create_model("local-dir:{folder}", pretrained=True)
        saved = load_file("{folder / 'model.safetensors'}")
        state = model.state_dict()
        assert set(state) == set(saved), set(state) ^ set(saved)
        assert all(torch.equal(state[k], saved[k]) for k in saved)
        print(model.num_classes, model(torch.zeros(1, 3, 64, 64)).shape[-1], model.pretrained_cfg["source"])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}  # no cache, no network
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "512", "local-dir"]
    _same_features(folder, run)


def test_knn_on_an_export_equals_knn_on_the_run(run: Path, exported, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from vito.eval.core.result import read_result

    noise = np.random.default_rng(0)
    for index in range(12):  # noise images with arbitrary labels: a score that only the same features reproduce
        label = "abc"[noise.integers(3)]
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        pixels = noise.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "data" / label / f"{index}.png")
    encoders = [run] + [path for path, _ in exported.values()]
    scores = []
    for encoder in encoders:
        out = tmp_path / f"knn-{encoder.name}"
        assert main(["eval", "knn", "--encoder", str(encoder), "--train", str(tmp_path / "data"), "--val",
                     str(tmp_path / "data"), "--out", str(out), "--image-size", "32", "--num-workers", "0",
                     "--device", "cpu", "--k", "3"]) == 0
        result = read_result(out)
        scores.append(({k: m.value for k, m in result.metrics.items()}, result.tables))
    assert all(score == scores[0] for score in scores[1:]), scores


def test_an_existing_export_is_only_replaced_with_overwrite(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "encoder.pt"
    out.write_bytes(b"someone's file")
    assert main(["export", str(run), "--format", "timm", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{out} already exists: pass --overwrite" in error and len(error.strip().splitlines()) == 1
    assert out.read_bytes() == b"someone's file" and not (tmp_path / "encoder.pt.json").exists()
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text("{}")
    assert main(["export", str(run), "--format", "timm-hub", "--out", str(tmp_path / "hub")]) == 2
    assert "config.json already exists" in capsys.readouterr().err
    assert not (tmp_path / "hub" / "model.safetensors").exists()
    assert main(["export", str(run), "--format", "timm", "--out", str(out), "--overwrite"]) == 0
    assert torch.load(out, weights_only=True).keys() == timm.create_model("resnet18").state_dict().keys()


@pytest.mark.parametrize("fmt,name,message", [
    ("timm", "model.safetensors", "--format timm writes a .pt or .pth file"),  # the torch zip the issue found
    ("safetensors", "model.pt", "--format safetensors writes a .safetensors file"),
    ("detectron2", "model.pt", "--format detectron2 writes a .pkl file"),
    ("timm-hub", "model.safetensors", "--format timm-hub writes a folder"),
])
def test_a_suffix_that_does_not_fit_the_format_is_refused_before_writing(
        run: Path, tmp_path: Path, capsys, fmt: str, name: str, message: str) -> None:
    folder = tmp_path / "out"
    assert main(["export", str(run), "--format", fmt, "--out", str(folder / name)]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not folder.exists()


def test_a_run_without_checkpoint_and_unwritable_folders(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "empty-run").mkdir()
    assert main(["export", str(tmp_path / "empty-run"), "--format", "safetensors", "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(VitoError, match="a-file is a file, not a folder"):
        export(run, "safetensors", tmp_path / "a-file" / "x.safetensors")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only folder answers (root's never)
    with pytest.raises(VitoError, match="is not writable"):
        export(run, "safetensors", tmp_path / "x.safetensors")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "empty-run"]
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(VitoError, match="locked is not writable"):
            export(run, "timm-hub", locked / "hub")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
