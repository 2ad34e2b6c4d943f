"""ClickMe alignment: Spearman against scipy, the spec's test vector, human-map preprocessing, saliency maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vito.eval.human import saliency


def test_vector_7a_spearman_with_ties_and_ceiling():
    model = np.array([[0.1, 0.4, 0.4, 0.9], [0.2, 0.1, 0.3, 0.4]])
    human = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=float)
    rho = saliency.spearman_per_image(model, human)
    assert rho == pytest.approx([0.948683, 0.8], abs=1e-6)
    assert saliency.alignment_score(rho) == pytest.approx(1.329737, abs=1e-6)


def test_spearman_matches_scipy_on_maps_with_many_ties():
    generator = np.random.default_rng(0)
    model = generator.integers(0, 5, size=(4, 16, 16)).astype(float)  # heavy ties
    human = generator.normal(size=(4, 16, 16)).round(1)
    expected = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(model, human)]
    assert saliency.spearman_per_image(model, human) == pytest.approx(expected, abs=1e-12)


def test_flat_maps_are_left_out_of_the_score():
    rho = saliency.spearman_per_image(np.ones((2, 4)), np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=float))
    assert np.isnan(rho).all() and np.isnan(saliency.alignment_score(rho))
    assert saliency.alignment_score(np.array([0.5, np.nan])) == pytest.approx(0.5 / 0.65753)


def test_gaussian_kernel_is_the_reference_kernel():
    kernel = saliency.gaussian_kernel()
    assert kernel.shape == (10, 10) and kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    offsets_y = torch.arange(4, -6, -1.0)  # rows: 4 .. -5, columns: -5 .. 4 (reference's floor division)
    offsets_x = torch.arange(-5, 5.0)
    raw = torch.exp(-(offsets_y[:, None] ** 2 + offsets_x[None] ** 2) / 200)
    assert torch.allclose(kernel, raw / raw.sum())


def test_human_map_preprocessing_shapes_and_mass():
    clicks = torch.zeros(2, 256, 256)
    clicks[0, 100:140, 60:90] = 255.0
    clicks[1] = 10.0
    maps = saliency.preprocess_human_maps(clicks)
    assert maps.shape == (2, 224, 224)
    # The blur kernel sums to 1: away from the border a constant map keeps its value (zero padding darkens edges).
    assert maps[1, 100, 100].item() == pytest.approx(10.0, abs=1e-4) and maps[1, 0, 0].item() < 10.0
    peak = np.unravel_index(maps[0].argmax().item(), (224, 224))
    assert 90 < peak[0] < 125 and 55 < peak[1] < 80  # the blob stays where it was (scaled by 224/256)
    assert saliency.preprocess_human_maps(clicks[0]).shape == (1, 224, 224)


def test_gradient_saliency_is_max_abs_gradient_of_the_true_logit():
    weights = torch.randn(5, 3)

    def classifier(images: torch.Tensor) -> torch.Tensor:  # logit_k = sum over pixels of w_k . x
        return torch.einsum("kc,bchw->bk", weights, images)

    maps = saliency.gradient_saliency(classifier, torch.randn(2, 3, 4, 4), torch.tensor([1, 3]))
    assert maps.shape == (2, 4, 4)
    std = torch.tensor(saliency.IMAGENET_STD)  # the gradient w.r.t. un-normalised pixels
    assert torch.allclose(maps[0], (weights[1].abs() / std).max().expand(4, 4))
    assert torch.allclose(maps[1], (weights[3].abs() / std).max().expand(4, 4))


class _AttentionEncoder(torch.nn.Module):
    """Two stages of attention: a 2x2 map and a 1x1 map, as VITO's encoder reports them."""

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        batch = len(images)
        return [torch.tensor([[0.1, 0.2], [0.3, 0.4]]).expand(batch, 2, 2), torch.ones(batch, 1, 1)]


def test_attention_saliency_upsamples_and_averages_the_stages():
    maps = saliency.attention_saliency(_AttentionEncoder(), torch.zeros(1, 3, 8, 8))
    assert maps.shape == (1, 8, 8)
    assert maps[0, 0, 0].item() == pytest.approx((0.1 + 1.0) / 2)
    assert maps[0, -1, -1].item() == pytest.approx((0.4 + 1.0) / 2)


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
    aligned, examples = saliency.evaluate_clickme(_TopLeftEncoder(), root, image_size=32, keep_examples=2)
    assert aligned["images"] == 3 and aligned["saliency"] == "attention"
    assert aligned["spearman_mean"] > 0.5 and aligned["alignment"] == pytest.approx(aligned["spearman_mean"] / 0.65753)
    assert examples["pixels"].shape == (2, 32, 32, 3) and examples["model"].shape == (2, 32, 32)

    class Reversed(_TopLeftEncoder):
        def attention_maps(self, images):
            return [-m for m in super().attention_maps(images)]

    opposed, _ = saliency.evaluate_clickme(Reversed(), root, image_size=32)
    assert opposed["spearman_mean"] == pytest.approx(-aligned["spearman_mean"], abs=1e-9)


def test_overlay_picture_with_two_models(tmp_path):
    from vito.eval.human.clickme_pictures import plot_saliency_overlays

    pixels = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    maps = np.random.default_rng(0).random((2, 16, 16))
    out = plot_saliency_overlays(pixels, maps, {"vito": maps, "supervised": maps[:, ::-1]}, tmp_path / "fig.png")
    assert out.stat().st_size > 1000


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_clickme_files_in_odd_shapes_and_modes(tmp_path):
    generator = np.random.default_rng(0)
    rgb = generator.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    maps = generator.random((2, 16, 16))
    single = saliency.read_clickme_file(_save(tmp_path / "one.npz", image=rgb[0], heatmap=maps[0], label=np.int64(3)))
    assert single["image"].shape == (1, 16, 16, 3) and single["label"].tolist() == [3]
    grey = saliency.read_clickme_file(_save(tmp_path / "grey.npz", image=rgb[..., 0], heatmap=maps, label=np.arange(2)))
    assert grey["image"].shape == (2, 16, 16, 3) and (grey["image"][..., 2] == rgb[..., 0]).all()
    rgba = np.concatenate([rgb, np.full((2, 16, 16, 1), 255, np.uint8)], axis=-1)
    assert (saliency.read_clickme_file(_save(tmp_path / "rgba.npz", image=rgba, heatmap=maps[..., None],
                                             label=np.arange(2)))["image"] == rgb).all()
    with pytest.raises(saliency.DataError, match="label"):
        saliency.read_clickme_file(_save(tmp_path / "count.npz", image=rgb, heatmap=maps, label=np.arange(3)))
    with pytest.raises(saliency.DataError, match="0..999"):
        saliency.read_clickme_file(_save(tmp_path / "range.npz", image=rgb, heatmap=maps, label=np.array([1, 1000])))
    with pytest.raises(saliency.DataError, match="image, heatmap and label"):
        saliency.read_clickme_file(_save(tmp_path / "keys.npz", image=rgb, label=np.arange(2)))
    with pytest.raises(saliency.DataError, match="docs/clickme.md"):
        saliency.clickme_files(tmp_path / "nowhere")


class _UniformEncoder(torch.nn.Module):
    """Average pooling reports flat "attention" maps: there is nothing to show, so gradients are needed."""

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.full((len(images), 2, 2), 0.25)]


def test_flat_attention_maps_fall_back_to_gradient_saliency(tmp_path):
    root = _write_clickme(tmp_path / "clickme")
    with pytest.raises(saliency.VitoError, match="gradient saliency needs"):
        saliency.evaluate_clickme(_UniformEncoder(), root, image_size=32)


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
    from vito.eval.core.base import read_result
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
