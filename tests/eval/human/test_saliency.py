"""ClickMe saliency: Spearman against scipy and the spec's test vector, human-map preprocessing, model saliency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vito.data.imagenet import IMAGENET_STD
from vito.eval.human.saliency import (
    alignment_score,
    attention_saliency,
    gaussian_kernel,
    gradient_saliency,
    preprocess_human_maps,
    spearman_per_image,
)


def test_vector_7a_spearman_with_ties_and_ceiling():
    model = np.array([[0.1, 0.4, 0.4, 0.9], [0.2, 0.1, 0.3, 0.4]])
    human = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=float)
    rho = spearman_per_image(model, human)
    assert rho == pytest.approx([0.948683, 0.8], abs=1e-6)
    assert alignment_score(rho) == pytest.approx(1.329737, abs=1e-6)


def test_spearman_matches_scipy_on_maps_with_many_ties():
    generator = np.random.default_rng(0)
    model = generator.integers(0, 5, size=(4, 16, 16)).astype(float)  # heavy ties
    human = generator.normal(size=(4, 16, 16)).round(1)
    expected = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(model, human)]
    assert spearman_per_image(model, human) == pytest.approx(expected, abs=1e-12)


def test_flat_maps_are_left_out_of_the_score():
    rho = spearman_per_image(np.ones((2, 4)), np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=float))
    assert np.isnan(rho).all() and np.isnan(alignment_score(rho))
    assert alignment_score(np.array([0.5, np.nan])) == pytest.approx(0.5 / 0.65753)


def test_gaussian_kernel_is_the_reference_kernel():
    kernel = gaussian_kernel()
    assert kernel.shape == (10, 10) and kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    offsets_y = torch.arange(4, -6, -1.0)  # rows: 4 .. -5, columns: -5 .. 4 (reference's floor division)
    offsets_x = torch.arange(-5, 5.0)
    raw = torch.exp(-(offsets_y[:, None] ** 2 + offsets_x[None] ** 2) / 200)
    assert torch.allclose(kernel, raw / raw.sum())


def test_human_map_preprocessing_shapes_and_mass():
    clicks = torch.zeros(2, 256, 256)
    clicks[0, 100:140, 60:90] = 255.0
    clicks[1] = 10.0
    maps = preprocess_human_maps(clicks)
    assert maps.shape == (2, 224, 224)
    # The blur kernel sums to 1: away from the border a constant map keeps its value (zero padding darkens edges).
    assert maps[1, 100, 100].item() == pytest.approx(10.0, abs=1e-4) and maps[1, 0, 0].item() < 10.0
    peak = np.unravel_index(maps[0].argmax().item(), (224, 224))
    assert 90 < peak[0] < 125 and 55 < peak[1] < 80  # the blob stays where it was (scaled by 224/256)
    assert preprocess_human_maps(clicks[0]).shape == (1, 224, 224)


def test_gradient_saliency_is_max_abs_gradient_of_the_true_logit():
    weights = torch.randn(5, 3)

    def classifier(images: torch.Tensor) -> torch.Tensor:  # logit_k = sum over pixels of w_k . x
        return torch.einsum("kc,bchw->bk", weights, images)

    maps = gradient_saliency(classifier, torch.randn(2, 3, 4, 4), torch.tensor([1, 3]))
    assert maps.shape == (2, 4, 4)
    std = torch.tensor(IMAGENET_STD)  # the gradient w.r.t. un-normalised pixels
    assert torch.allclose(maps[0], (weights[1].abs() / std).max().expand(4, 4))
    assert torch.allclose(maps[1], (weights[3].abs() / std).max().expand(4, 4))


class _AttentionEncoder(torch.nn.Module):
    """Two stages of attention: a 2x2 map and a 1x1 map, as VITO's encoder reports them."""

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        batch = len(images)
        return [torch.tensor([[0.1, 0.2], [0.3, 0.4]]).expand(batch, 2, 2), torch.ones(batch, 1, 1)]


def test_attention_saliency_upsamples_and_averages_the_stages():
    maps = attention_saliency(_AttentionEncoder(), torch.zeros(1, 3, 8, 8))
    assert maps.shape == (1, 8, 8)
    assert maps[0, 0, 0].item() == pytest.approx((0.1 + 1.0) / 2)
    assert maps[0, -1, -1].item() == pytest.approx((0.4 + 1.0) / 2)
