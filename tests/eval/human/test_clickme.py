"""`vito eval clickme`: alignment on constructed maps, the gradient fallback, and attention and gradient runs side by
side through the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vito.errors import VitoError
from vito.eval.human.clickme import evaluate_clickme


def _write_clickme(folder, count=3, size=64):
    generator = np.random.default_rng(1)
    folder.mkdir(parents=True)
    heatmaps = np.zeros((count, size, size), dtype=np.uint8)
    heatmaps[:, : size // 2, : size // 2] = 200  # people click the top-left quarter
    np.savez(folder / "val-0.npz", image=generator.integers(0, 255, (count, size, size, 3), dtype=np.uint8),
             heatmap=heatmaps, label=np.arange(count))
    return folder


class _TopLeftEncoder(torch.nn.Module):
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        batch, _, height, width = images.shape
        rows = torch.arange(height, dtype=torch.float32)[:, None]
        cols = torch.arange(width, dtype=torch.float32)[None]
        return [(-(rows + cols)).expand(batch, height, width)]  # highest in the top-left corner


def test_clickme_end_to_end_on_constructed_maps(tmp_path):
    root = _write_clickme(tmp_path / "clickme")
    aligned, examples = evaluate_clickme(_TopLeftEncoder(), root, image_size=32, keep_examples=2)
    assert aligned["images"] == 3 and aligned["saliency"] == "attention"
    assert aligned["spearman_mean"] > 0.5 and aligned["alignment"] == pytest.approx(aligned["spearman_mean"] / 0.65753)
    assert examples["pixels"].shape == (2, 32, 32, 3) and examples["model"].shape == (2, 32, 32)

    class Reversed(_TopLeftEncoder):
        def attention_maps(self, images):
            return [-m for m in super().attention_maps(images)]

    opposed, _ = evaluate_clickme(Reversed(), root, image_size=32)
    assert opposed["spearman_mean"] == pytest.approx(-aligned["spearman_mean"], abs=1e-9)


class _UniformEncoder(torch.nn.Module):
    """Average pooling reports flat "attention" maps: there is nothing to show, so gradients are needed."""

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.full((len(images), 2, 2), 0.25)]


def test_flat_attention_maps_fall_back_to_gradient_saliency(tmp_path):
    root = _write_clickme(tmp_path / "clickme")
    with pytest.raises(VitoError, match="gradient saliency needs"):
        evaluate_clickme(_UniformEncoder(), root, image_size=32)


@pytest.fixture(scope="module")
def tiny_vito_run(tmp_path_factory):
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    run = tmp_path_factory.mktemp("run")
    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention_hidden=8"])
    save_checkpoint(run, {"format": "vito-checkpoint/1", "step": 1, "config": config.to_dict(),
                          "model": Vito(config.model, config.loss).state_dict(), "optimizer": {}, "rng": {}, "data": {}})
    return run


def test_cli_attention_and_gradient_runs_side_by_side(tiny_vito_run, tmp_path):
    """A vito checkpoint (attention) and a ResNet-18 with a linear head (gradient), then one Fig. 3 picture."""
    from vito.cli import main
    from vito.eval.core.result import read_result
    from vito.eval.probes.heads import save_linear_head

    root = _write_clickme(tmp_path / "clickme", count=3, size=64)
    save_linear_head(tmp_path / "head.pt", torch.nn.Linear(512, 1000))
    common = ["--root", str(root), "--image-size", "64", "--device", "cpu"]
    assert main(["eval", "clickme", "--encoder", str(tiny_vito_run), "--out", str(tmp_path / "vito"), *common]) == 0
    assert main(["eval", "clickme", "--encoder", "timm:resnet18", "--random-init", "--classifier",
                 str(tmp_path / "head.pt"), "--out", str(tmp_path / "resnet"), "--compare", str(tmp_path / "vito"),
                 *common]) == 0
    vito, resnet = read_result(tmp_path / "vito"), read_result(tmp_path / "resnet")
    assert (vito.settings["saliency_used"], resnet.settings["saliency_used"]) == ("attention", "gradient")
    assert vito.coverage.expected == resnet.coverage.expected == 3 and resnet.coverage.used == 3
    assert (tmp_path / "resnet" / "result.md").read_text().startswith("# clickme — timm:resnet18")
    assert (tmp_path / "resnet" / "clickme_overlays.png").stat().st_size > 1000
    assert main(["eval", "clickme", "--encoder", "timm:resnet18", "--random-init", "--classifier",
                 str(tmp_path / "head.pt"), "--out", str(tmp_path / "again"), "--compare", str(tmp_path / "nothing"),
                 *common]) == 2
    assert not (tmp_path / "again").exists()
