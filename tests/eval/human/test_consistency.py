"""Model-vs-human's metrics against the spec's test vectors: kappa and its ceiled forms, aggregation, shape bias."""

from __future__ import annotations

import numpy as np
import pytest

from vito.eval.human.consistency import compare, compare_sessions, nested_mean, shape_bias
from vito.eval.human.scoring import score_dataset
from vito.eval.human.trials import EXCLUDED_CONDITIONS, Session, Trial


def _session(truth: list[str], responses: list[str], condition: str = "0") -> Session:
    return {f"img{i}.png": Trial(f"img{i}.png", t, r, condition) for i, (t, r) in enumerate(zip(truth, responses))}


TRUTH = ["dog", "cat", "car", "bird", "boat", "dog", "knife", "oven", "bear", "clock"]
MODEL = ["dog", "cat", "car", "bird", "boat", "dog", "cat", "car", "bird", "bottle"]
H1 = ["dog", "cat", "car", "dog", "boat", "dog", "knife", "oven", "na", "chair"]
H2 = ["dog", "cat", "car", "cat", "boat", "dog", "knife", "oven", "bear", "dog"]


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (MODEL, H1, (0.6, 0.7, 0.54, 0.70, 0.347826, 0.01, 0.782609, 0.444444)),
        (MODEL, H2, (0.6, 0.8, 0.56, 0.60, 0.090909, 0.04, 0.545455, 0.166667)),
        (H1, H2, (0.7, 0.8, 0.62, 0.90, 0.736842, 0.01, 0.736842, 1.0)),
    ],
)
def test_vector_1b_pair_table(a, b, expected):
    (scores,) = compare_sessions(_session(TRUTH, a), _session(TRUTH, b)).values()
    got = (scores.accuracy_a, scores.accuracy_b, scores.expected_consistency, scores.observed_consistency,
           scores.error_consistency, scores.accuracy_difference, scores.kappa_max,
           scores.error_consistency_ceiled_accuracy_bound)
    assert got == pytest.approx(expected, abs=1e-6)


def test_vector_1b_both_ceiled_forms():
    result = score_dataset(_session(TRUTH, MODEL), {"h1": _session(TRUTH, H1), "h2": _session(TRUTH, H2)}, "made-up")
    assert result["mean"]["error_consistency"] == pytest.approx(0.219368, abs=1e-6)
    assert result["human_noise_ceiling_kappa"] == pytest.approx(0.736842, abs=1e-6)
    assert result["error_consistency_ceiled_noise"] == pytest.approx(0.297713, abs=1e-6)
    assert result["mean"]["error_consistency_ceiled_accuracy_bound"] == pytest.approx((0.444444 + 0.166667) / 2, abs=1e-6)
    assert result["humans"]["error_consistency"] == pytest.approx(0.736842, abs=1e-6)
    assert result["humans"]["accuracy"] == pytest.approx((0.7 + 0.8) / 2)  # both subjects, not h1 alone


def test_kappa_is_one_when_decision_makers_agree_completely():
    scores = compare(np.ones(5, bool), np.ones(5, bool))
    assert scores.error_consistency == 1.0 and scores.observed_consistency == 1.0


def test_vector_1c_aggregation_order():
    tree = {"D1": {"s1": {"a": 0.2, "b": 0.4}, "s2": {"a": 0.1, "b": 0.3}}, "D2": {"s1": {"-": 0.5}}}
    assert nested_mean(tree) == pytest.approx(0.375)  # a flat mean would be 0.3


def test_excluded_conditions_are_dropped_before_averaging():
    model = {**_session(["dog"] * 4, ["dog", "dog", "cat", "cat"], "0.6"), **{
        f"x{i}": Trial(f"x{i}", "dog", r, "0.1") for i, r in enumerate(["dog", "cat", "dog", "cat"])}}
    person = {k: Trial(v.image_id, v.category, "dog", v.condition) for k, v in model.items()}
    scores = compare_sessions(model, person, EXCLUDED_CONDITIONS["uniform-noise"])
    assert list(scores) == ["0.1"]


def test_shape_bias_on_made_up_cue_conflict_responses():
    rows = [("bird3-clock2.png", "bird", "bird"),  # shape
            ("car1-boat2.png", "car", "car"),  # shape
            ("dog1-cat2.png", "dog", "cat"),  # texture
            ("knife1-oven2.png", "knife", "truck"),  # neither
            ("bird1-bird2.png", "bird", "bird")]  # same class in shape and texture: dropped
    session = {name: Trial(name, category, response, "0") for name, category, response in rows}
    bias = shape_bias(session)
    assert bias["trials"] == 4
    assert (bias["shape_fraction"], bias["texture_fraction"]) == (0.5, 0.25)
    assert bias["shape_bias"] == pytest.approx(2 / 3)
