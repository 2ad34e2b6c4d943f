"""DAVIS: J/F against the spec's vectors and the official OSVOS scores; label propagation vectors and a toy video."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vito.errors import VitoError
from vito.eval.video.davis_propagation import (
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


def _tiny_davis(root, frames: int = 4) -> None:
    """A 2017-layout sequence: two objects (palette ids 1, 2) and a void border, 64x96."""
    from vito.eval.video.davis_propagation import save_palette_png

    for t in range(frames):
        image = np.full((64, 96, 3), 40, np.uint8)
        ids = np.zeros((64, 96), np.uint8)
        ids[10 + t : 30 + t, 10:30] = 1
        ids[30:50, 50 + t : 80 + t] = 2
        image[ids == 1] = (230, 30, 30)
        image[ids == 2] = (30, 30, 230)
        ids[0, :] = 255
        (root / "JPEGImages" / "480p" / "toy").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / "480p" / "toy" / f"{t:05d}.jpg", quality=95)
        save_palette_png(root / "Annotations" / "480p" / "toy" / f"{t:05d}.png", ids)


def test_cli_propagates_and_scores_a_toy_sequence(tmp_path) -> None:
    from vito.cli import main
    from vito.eval.core.base import read_result

    _tiny_davis(tmp_path / "davis")
    out = tmp_path / "out"
    assert main(["eval", "davis", "--encoder", "timm:resnet18", "--random-init", "--davis-root", str(tmp_path / "davis"),
                 "--out", str(out), "--device", "cpu", "--radius", "6"]) == 0
    report = read_result(out)
    assert {row["object"] for row in report.tables["per object"]} == {"toy_1", "toy_2"}
    assert report.settings["topk"] == 10 and report.settings["stride8"] is True
    prediction = Image.open(out / "results" / "toy" / "00002.png")
    assert prediction.mode == "P" and prediction.size == (96, 64)
    assert report.value("j_mean") > 0.5  # colour blobs are easy even for a random network
    rescored = tmp_path / "rescored"
    assert main(["eval", "davis", "--davis-root", str(tmp_path / "davis"), "--results", str(out / "results"),
                 "--out", str(rescored)]) == 0
    values = {name: metric.value for name, metric in report.metrics.items()}
    assert {name: m.value for name, m in read_result(rescored).metrics.items()} == pytest.approx(values)


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


def test_grey_annotations_with_several_ids_are_2017_ids(tmp_path) -> None:
    ids = np.array([[0, 1, 2, 255]] * 4, np.uint8)  # a DAVIS-2017 mask saved as grey instead of palette
    Image.fromarray(ids, mode="L").save(tmp_path / "grey_ids.png")
    assert read_object_ids(tmp_path / "grey_ids.png")[0].tolist() == [0, 1, 2, 0]
    assert read_object_ids(tmp_path / "grey_ids.png", layout="2016")[0].tolist() == [0, 0, 0, 1]


def _results_like_gt(root, out) -> None:
    """The toy sequence's ground truth (void as background) written as a results folder."""
    from vito.eval.video.davis_propagation import save_palette_png

    for path in sorted((root / "Annotations" / "480p" / "toy").glob("*.png")):
        save_palette_png(out / "toy" / path.name, read_object_ids(path))


def test_scoring_reads_only_the_scored_frames_as_the_official_code(tmp_path) -> None:
    from vito.eval.video.davis_propagation import save_palette_png

    _tiny_davis(tmp_path / "davis", frames=5)
    results = tmp_path / "results"
    _results_like_gt(tmp_path / "davis", results)
    (results / "toy" / "00004.png").unlink()  # the last frame is never scored
    save_palette_png(results / "toy" / "00000.png", np.full((64, 96), 7, np.uint8))  # nor is the first
    report = score_results(tmp_path / "davis", results)
    assert report["global"]["J-Mean"] == 1.0 and report["global"]["F-Mean"] == 1.0
    assert len(report["per_frame"]["toy"]["1"]["J"]) == 3


@pytest.mark.parametrize("problem", ["missing", "rgb", "size", "corrupt"])
def test_scoring_names_a_bad_result_file(tmp_path, problem: str) -> None:
    from vito.errors import DataError

    _tiny_davis(tmp_path / "davis", frames=4)
    results = tmp_path / "results"
    _results_like_gt(tmp_path / "davis", results)
    bad = results / "toy" / "00001.png"
    if problem == "missing":
        bad.unlink()
    elif problem == "rgb":
        Image.new("RGB", (96, 64)).save(bad)
    elif problem == "size":
        Image.new("P", (48, 32)).save(bad)
    else:
        bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="00001.png"):
        score_results(tmp_path / "davis", results)


def test_frames_are_resized_to_the_short_side_and_masks_come_back_full_size(tmp_path) -> None:
    from vito.eval.core.encoders import load_encoder
    from vito.eval.video.davis_propagation import find_sequences, propagate_sequence, read_frame

    _tiny_davis(tmp_path / "davis", frames=3)
    frame = tmp_path / "davis" / "JPEGImages" / "480p" / "toy" / "00000.jpg"
    assert read_frame(frame, 32).shape == (3, 32, 48)
    assert read_frame(frame, None).shape == (3, 64, 96)
    encoder = load_encoder("timm:resnet18")
    encoder.remove_stride(-2)
    sequence = find_sequences(tmp_path / "davis")[0]
    predictions = propagate_sequence(encoder, sequence, PropagationSettings(short_side=32, radius=4.0))
    assert [p.shape for p in predictions] == [(64, 96)] * 3
