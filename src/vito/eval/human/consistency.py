"""Model-vs-human's metrics (docs/metrics.md, model-vs-human): agreement of two decision makers, trial by trial.

Accuracy alone cannot tell *how* a model decides; error consistency (Cohen's kappa on "correct or not") asks
whether the model errs on the same images as people, beyond what two independent observers of the same
accuracies would share by chance. Shape bias asks, on cue-conflict images, whether shape or texture decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vito.eval.human.trials import Session

# Harmonised "which ceiling is which" names, used as JSON keys and table headers.
METRICS = (
    "accuracy",
    "human_accuracy",
    "accuracy_difference",
    "observed_consistency",
    "error_consistency",
    "error_consistency_ceiled_accuracy_bound",
)

# What each form of error consistency means, written into every scored result (``ceiling_definitions``).
CEILING_NOTES = {
    "error_consistency": "raw Cohen's kappa on correctness, mean over conditions, then subjects, then datasets",
    "error_consistency_ceiled_accuracy_bound": "per pair kappa / kappa_max, kappa_max = (1-|pA-pB|-c_exp)/(1-c_exp) "
    "(largest kappa the two accuracies allow), aggregated like raw kappa",
    "error_consistency_ceiled_noise": "Brain-Score style: per dataset clip(|mean model-human kappa| / |mean "
    "human-human kappa|, 0, 1), then mean over datasets",
    "accuracy_difference": "squared difference (p_model - p_human)^2, the benchmark's default norm",
}


@dataclass(frozen=True)
class PairScores:
    """Agreement of decision makers A and B on the same trials."""

    accuracy_a: float
    accuracy_b: float
    expected_consistency: float
    observed_consistency: float
    error_consistency: float  # Cohen's kappa on correctness
    accuracy_difference: float  # (p_A - p_B)^2, the benchmark's default (squared) norm
    kappa_max: float  # largest kappa attainable at these two accuracies
    error_consistency_ceiled_accuracy_bound: float  # kappa / kappa_max (nan when kappa_max is 0)
    trials: int


def compare(correct_a: np.ndarray, correct_b: np.ndarray) -> PairScores:
    """Cohen's kappa and friends for two boolean "was correct" vectors over the same trials."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("compare needs two non-empty correctness vectors of equal length")
    p_a, p_b = float(a.mean()), float(b.mean())
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    observed = float((a == b).mean())
    if observed == 1.0:
        kappa = 1.0  # covers 0/0 when both are always (or never) right
    else:
        kappa = (observed - expected) / (1 - expected)
    best_observed = 1 - abs(p_a - p_b)  # errors can overlap at most this much
    kappa_max = 1.0 if expected == 1.0 else (best_observed - expected) / (1 - expected)
    ceiled = kappa / kappa_max if abs(kappa_max) > 1e-12 else math.nan
    return PairScores(p_a, p_b, expected, observed, kappa, (p_a - p_b) ** 2, kappa_max, ceiled, int(a.size))


def compare_sessions(a: Session, b: Session, excluded: Iterable[str] = ()) -> dict[str, PairScores]:
    """Per-condition scores of A against B on the stimuli both saw (trials aligned by image id)."""
    excluded = set(excluded)
    by_condition: dict[str, list[str]] = {}
    for image_id in sorted(a.keys() & b.keys()):
        condition = b[image_id].condition
        if condition not in excluded:
            by_condition.setdefault(condition, []).append(image_id)
    return {
        condition: compare(np.array([a[i].correct for i in ids]), np.array([b[i].correct for i in ids]))
        for condition, ids in sorted(by_condition.items())
    }


def nested_mean(tree: Mapping | float) -> float:
    """Mean of means down a tree (dataset → subject → condition → value), ignoring nan leaves.

    This is the benchmark's aggregation: mean over conditions, then over subjects, then over datasets.
    """
    if not isinstance(tree, Mapping):
        return float(tree)
    values = [nested_mean(child) for child in tree.values()]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def condition_means(scores: Mapping[str, PairScores]) -> dict[str, float]:
    """The headline metrics of one pair, averaged over conditions."""
    columns = {
        "accuracy": [s.accuracy_a for s in scores.values()],
        "human_accuracy": [s.accuracy_b for s in scores.values()],
        "accuracy_difference": [s.accuracy_difference for s in scores.values()],
        "observed_consistency": [s.observed_consistency for s in scores.values()],
        "error_consistency": [s.error_consistency for s in scores.values()],
        "error_consistency_ceiled_accuracy_bound": [s.error_consistency_ceiled_accuracy_bound for s in scores.values()],
    }
    return {name: nested_mean(dict(enumerate(values))) for name, values in columns.items()}


def mean_row(scores_by_name: Mapping[str, Mapping[str, PairScores]]) -> dict[str, float]:
    """One table row: each pair's metrics averaged over conditions, then over the pairs (subjects)."""
    means = {name: condition_means(scores) for name, scores in scores_by_name.items()}
    return {metric: nested_mean({name: row[metric] for name, row in means.items()}) for metric in METRICS}


def humans_row(pairs: Mapping[str, Mapping[str, PairScores]]) -> dict[str, float]:
    """The reference row over unordered subject pairs. Its accuracy is the mean over both members of each
    pair, i.e. the subjects' mean accuracy (the first member alone would overweight early subject names)."""
    both = nested_mean({p: {c: (v.accuracy_a + v.accuracy_b) / 2 for c, v in sc.items()} for p, sc in pairs.items()})
    return {**mean_row(pairs), "accuracy": both, "human_accuracy": both}


def texture_category(image_id: str) -> str:
    """``bird3-clock2.png`` → ``clock``: the category of the style (texture) source."""
    texture = Path(image_id).stem.split("-")[-1]
    return "".join(c for c in texture if not c.isdigit())


def shape_bias(session: Session) -> dict[str, float]:
    """Fraction of shape decisions among shape-or-texture decisions, same-class images dropped (docs/metrics.md)."""
    trials = [t for t in session.values() if t.category != texture_category(t.image_id)]
    if not trials:
        return {"shape_bias": math.nan, "shape_fraction": math.nan, "texture_fraction": math.nan, "trials": 0}
    shape = sum(t.response == t.category for t in trials) / len(trials)
    texture = sum(t.response == texture_category(t.image_id) for t in trials) / len(trials)
    bias = shape / (shape + texture) if shape + texture > 0 else math.nan
    return {"shape_bias": bias, "shape_fraction": shape, "texture_fraction": texture, "trials": len(trials)}
