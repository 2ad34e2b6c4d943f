"""DAVIS: J/F against the spec's vectors and the official OSVOS scores; label propagation vectors and a toy video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vito.errors import VitoError
from vito.eval.davis import (
    PropagationSettings,
    boundary_f_measure,
    evaluate_sequence,
    propagate_features,
    propagate_top_k,
    read_object_ids,
    region_similarity,
    score_results,
    summarize,
)


def _box(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def test_vector_2a_small_squares() -> None:
    gt, pred = _box((10, 10), (2, 5), (2, 5)), _box((10, 10), (3, 6), (3, 6))
    assert region_similarity(gt, pred) == pytest.approx(9 / 23)
    assert boundary_f_measure(gt, pred) == pytest.approx(0.9375)


def test_vector_2b_tolerance_at_480p() -> None:
    gt = _box((480, 854), (100, 299), (200, 499))
    down8, down9 = np.roll(gt, 8, axis=0), np.roll(gt, 9, axis=0)
    assert region_similarity(gt, down8) == pytest.approx(0.923077, abs=1e-6)
    assert boundary_f_measure(gt, down8) == pytest.approx(1.0)
    assert region_similarity(gt, down9) == pytest.approx(0.913876, abs=1e-6)
    assert boundary_f_measure(gt, down9) == pytest.approx(0.416, abs=1e-3)
    shifted = _box((480, 854), (110, 309), (190, 489))
    assert region_similarity(gt, shifted) == pytest.approx(0.848998, abs=1e-6)
    assert boundary_f_measure(gt, shifted) == pytest.approx(0.034, abs=1e-3)


def test_vector_2c_empty_masks() -> None:
    empty, full = np.zeros((20, 20), bool), _box((20, 20), (5, 9), (5, 9))
    assert region_similarity(empty, empty) == 1 and boundary_f_measure(empty, empty) == 1
    assert region_similarity(full, empty) == 0 and boundary_f_measure(full, empty) == 0


def test_vector_2d_aggregation() -> None:
    per_sequence = {"seq": {1: {"J": [0.5, 0.7, 0.9], "F": [0.6] * 3}, 2: {"J": [0.2, 0.4, 0.6], "F": [0.1, 0.2, 0.3]}}}
    overall = summarize(per_sequence)["global"]
    assert overall["J-Mean"] == pytest.approx(0.55)
    assert overall["F-Mean"] == pytest.approx(0.40)
    assert overall["J&F-Mean"] == pytest.approx(0.475)
    assert overall["J-Recall"] == pytest.approx(0.5)
    assert overall["J-Decay"] == pytest.approx(-0.3)  # each object: mean of the first bin minus the last


def test_first_and_last_frames_are_dropped_and_extra_ids_rejected() -> None:
    gt = np.zeros((5, 8, 8), np.uint8)
    gt[:, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[0] = pred[-1] = 0  # wrong only on the dropped frames
    assert evaluate_sequence(gt, pred)[1]["J"] == [1.0, 1.0, 1.0]
    pred[2, 0, 0] = 2
    with pytest.raises(VitoError):
        evaluate_sequence(gt, pred)


def test_2016_and_2017_annotation_layouts(tmp_path) -> None:
    grey = np.zeros((4, 4), np.uint8)
    grey[1, 1] = 255
    Image.fromarray(grey, mode="L").save(tmp_path / "2016.png")
    assert read_object_ids(tmp_path / "2016.png").tolist() == (grey // 255).tolist()
    palette = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    image = Image.fromarray(palette, mode="P")
    image.putpalette([0, 0, 0] * 256)
    image.save(tmp_path / "2017.png")
    assert read_object_ids(tmp_path / "2017.png")[0].tolist() == [0, 1, 2, 0]  # void counts as background


def test_osvos_sample_reproduces_official_scores(shared_data) -> None:
    root = shared_data / "davis2016_sample"
    report = score_results(root, root / "Results" / "osvos-davis2017")
    j = {key: round(o["J-Mean"], 3) for key, o in report["per_object"].items()}
    assert j == {"blackswan_1": 0.943, "car-shadow_1": 0.928, "dog_1": 0.711}


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
