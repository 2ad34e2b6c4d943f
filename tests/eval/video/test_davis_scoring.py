"""DAVIS J&F: J/F against the spec's vectors and the official OSVOS scores; which result files are read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.eval.video.davis_toy import tiny_davis
from vito.errors import VitoError
from vito.eval.video.davis_data import read_object_ids
from vito.eval.video.davis_scoring import (
    boundary_f_measure,
    evaluate_sequence,
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


def test_osvos_sample_reproduces_official_scores(shared_data) -> None:
    root = shared_data / "davis2016_sample"
    report = score_results(root, root / "Results" / "osvos-davis2017")
    j = {key: round(o["J-Mean"], 3) for key, o in report["per_object"].items()}
    assert j == {"blackswan_1": 0.943, "car-shadow_1": 0.928, "dog_1": 0.711}


def _results_like_gt(root, out) -> None:
    """The toy sequence's ground truth (void as background) written as a results folder."""
    from vito.eval.video.davis_data import save_palette_png

    for path in sorted((root / "Annotations" / "480p" / "toy").glob("*.png")):
        save_palette_png(out / "toy" / path.name, read_object_ids(path))


def test_scoring_reads_only_the_scored_frames_as_the_official_code(tmp_path) -> None:
    from vito.eval.video.davis_data import save_palette_png

    tiny_davis(tmp_path / "davis", frames=5)
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

    tiny_davis(tmp_path / "davis", frames=4)
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
