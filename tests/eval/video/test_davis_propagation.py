"""DAVIS label propagation: the spec's vectors, a moving square, tiling, and frames at the short side."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.eval.video.davis_toy import tiny_davis
from vito.eval.video.davis_propagation import PropagationSettings, propagate_features, propagate_top_k
from vito.eval.video.davis_scoring import evaluate_sequence

KEYS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
VALUES = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])


def test_propagation_vectors_3a_to_3d() -> None:
    q = torch.tensor([[0.8, 0.6]])
    assert propagate_top_k(q, KEYS, VALUES, 2, 0.07)[0].tolist() == pytest.approx([0.546157, 0.453843], abs=1e-6)
    assert propagate_top_k(q, KEYS, VALUES, 3, 1.0)[0].tolist() == pytest.approx([0.530290, 0.469710], abs=1e-6)
    q = torch.tensor([[1.0, 0.0]])
    allowed = torch.tensor([[True, False, True]])
    assert propagate_top_k(q, KEYS, VALUES, 2, 0.07, allowed)[0].tolist() == pytest.approx([0.999999, 0.000001], abs=1e-6)
    assert propagate_top_k(q, KEYS, VALUES, 2, 0.07)[0].tolist() == pytest.approx([0.998356, 0.001644], abs=1e-6)
    duplicated_k, duplicated_v = torch.cat([KEYS[:1], KEYS]), torch.cat([VALUES[:1], VALUES])
    assert propagate_top_k(q, duplicated_k, duplicated_v, 2, 0.07)[0].tolist() == [1.0, 0.0]
    # the same with the context in groups (frames): frame 0 twice, as VFS's context holds it for t <= m
    two_frames_k, two_frames_v = torch.stack([KEYS, KEYS]), torch.stack([VALUES, VALUES])
    assert propagate_top_k(q, two_frames_k, two_frames_v, 2, 0.07)[0].tolist() == [1.0, 0.0]
    three = propagate_top_k(q, two_frames_k, two_frames_v, 3, 0.07, allowed)[0]  # k2 masked: k1, k1, k3
    e = math.exp(-1 / 0.07)
    assert three.tolist() == pytest.approx([2 / (2 + e), e / (2 + e)], rel=1e-4)


def _square_video(frames: int = 8, size: int = 24, side: int = 6, dim: int = 64, shuffle: bool = False):
    """A square moving one cell per frame over a plain background; features name what is at each cell."""
    generator = torch.Generator().manual_seed(0)
    plain = torch.randn(1, dim, generator=generator)
    background = torch.nn.functional.normalize(plain + 0.1 * torch.randn(size * size, dim, generator=generator), dim=1)
    square = torch.nn.functional.normalize(torch.randn(side * side, dim, generator=generator), dim=1)
    features, ids = [], []
    for t in range(frames):
        top, left = 4 + t, 3 + t
        feat = background.clone().reshape(size, size, dim)
        feat[top : top + side, left : left + side] = square.reshape(side, side, dim)
        if shuffle:
            feat = torch.nn.functional.normalize(torch.randn(size, size, dim, generator=generator), dim=2)
        features.append(feat.permute(2, 0, 1))
        mask = np.zeros((size, size), np.uint8)
        mask[top : top + side, left : left + side] = 1
        ids.append(mask)
    return features, np.stack(ids)


@pytest.mark.parametrize("shuffle", [False, True])
def test_propagation_tracks_a_moving_square(shuffle: bool) -> None:
    features, gt = _square_video(shuffle=shuffle)
    settings = PropagationSettings(radius=5.0, context=3)
    predicted = np.stack(propagate_features(features, gt[0], settings))
    mean_j = float(np.mean(evaluate_sequence(gt, predicted)[1]["J"]))
    if shuffle:
        assert mean_j < 0.5
    else:
        assert mean_j > 0.9


@pytest.mark.parametrize("radius", [3.0, 4.5, None])
def test_tiled_propagation_equals_masking_every_cell(radius) -> None:
    from vito.eval.video.davis_propagation import propagate_frame

    generator = torch.Generator().manual_seed(0)
    height, width, frames = 11, 13, 3
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=0)  # noqa: E731
    query, context = unit(8, height, width), [unit(8, height, width) for _ in range(frames)]
    labels = [torch.rand(3, height, width, generator=generator) for _ in range(frames)]
    settings = PropagationSettings(radius=radius, topk=5)
    tiled = propagate_frame(query, context, labels, settings, tile=4)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    allowed = None
    if radius is not None:
        allowed = (((ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2).float().sqrt() < radius).repeat(1, frames)
    brute = propagate_top_k(query.flatten(1).T, torch.cat([c.flatten(1).T for c in context]),
                            torch.cat([v.flatten(1).T for v in labels]), 5, 0.07, allowed)
    assert torch.allclose(tiled.flatten(1).T, brute, atol=1e-6)


def test_frames_are_resized_to_the_short_side_and_masks_come_back_full_size(tmp_path) -> None:
    from vito.eval.core.encoders import load_encoder
    from vito.eval.video.davis_data import find_sequences, read_frame
    from vito.eval.video.davis_propagation import propagate_sequence

    tiny_davis(tmp_path / "davis", frames=3)
    frame = tmp_path / "davis" / "JPEGImages" / "480p" / "toy" / "00000.jpg"
    assert read_frame(frame, 32).shape == (3, 32, 48)
    assert read_frame(frame, None).shape == (3, 64, 96)
    encoder = load_encoder("timm:resnet18")
    encoder.remove_stride(-2)
    sequence = find_sequences(tmp_path / "davis")[0]
    predictions = propagate_sequence(encoder, sequence, PropagationSettings(short_side=32, radius=4.0))
    assert [p.shape for p in predictions] == [(64, 96)] * 3
