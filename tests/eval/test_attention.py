"""`vito attention`: overlays for images and video frames from a (tiny) vito checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vito.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    run = tmp_path_factory.mktemp("run")
    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention_hidden=8"])
    model = Vito(config.model, config.loss)
    save_checkpoint(run, {"format": "vito-checkpoint/1", "step": 1, "config": config.to_dict(),
                          "model": model.state_dict(), "optimizer": {}, "rng": {}, "data": {}})
    return run


def test_attention_pictures_for_image_and_video(tiny_run, tmp_path, shared_data) -> None:
    image = tmp_path / "square.png"
    Image.new("RGB", (80, 64), (30, 120, 200)).save(image)
    grey, rgba, corrupt = tmp_path / "grey.png", tmp_path / "rgba.png", tmp_path / "corrupt.png"
    Image.new("L", (70, 64), 90).save(grey)
    Image.new("RGBA", (64, 70), (200, 30, 30, 100)).save(rgba)
    corrupt.write_bytes(b"\x89PNG not an image")
    video = shared_data / "videos" / "imageio" / "realshort.mp4"
    out = tmp_path / "pictures"
    inputs = [image, grey, rgba, video, corrupt, tmp_path / "nope.png"]
    assert main(["attention", "--encoder", str(tiny_run), *map(str, inputs),
                 "--out", str(out), "--image-size", "64", "--frames-per-video", "2", "--device", "cpu"]) == 0
    report = json.loads((out / "attention.json").read_text())
    assert [p["rows"] for p in report["pictures"]] == [1, 1, 1, 2]
    assert report["pictures"][0]["stage_shapes"] == [[4, 4], [2, 2]]
    assert [Path(s["input"]).name for s in report["skipped"]] == ["corrupt.png", "nope.png"]
    assert Image.open(out / "square_attention.png").size[0] > 0
    assert (out / "realshort_attention.png").is_file()


def test_attention_needs_a_vito_encoder(tmp_path, capsys) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(image)
    assert main(["attention", "--encoder", "timm:resnet18", "--random-init", str(image), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    assert "no attention pooling" in capsys.readouterr().err


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
