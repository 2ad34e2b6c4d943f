"""Model-vs-human: trial-by-trial agreement between a classifier and human observers (docs/metrics.md, paper §4.2, A.9).

The benchmark of Geirhos et al. shows the same stimuli (edge drawings, cue-conflict images, low-pass filtered
or noisy photos) to people and to models, in 16 coarse categories. Accuracy alone cannot tell *how* a model
decides; error consistency (Cohen's kappa on "correct or not") asks whether the model errs on the same images
as people, beyond what two independent observers of the same accuracies would share by chance.

Everything here is plain bookkeeping on response tables and works without a model: a model's responses, or a
human subject's, are scored against the human raw data the same way.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vito.errors import DataError, VitoError
from vito.eval.core.base import Coverage, Evaluation, Metric, Result, register
from vito.eval.core.classifier import ImageNetClassifier, InferenceSettings, attach_head, predict_logits
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import list_images
from vito.eval.human.pictures import plot_consistency_table
from vito.io import atomic_write, read_json, read_text, write_json

log = logging.getLogger(__name__)

# The 16 categories in the benchmark's (alphabetical) order and their ImageNet-1k members (docs/metrics.md, model-vs-human).
CATEGORY_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, *range(10, 17), 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, *range(87, 97), 98, 99, 100,
             *range(127, 134), *range(135, 146)),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (*range(152, 192), *range(193, 204), *range(205, 227), *range(228, 242), *range(243, 251),
            *range(252, 258), 259, 261, 262, 263, 265, 266, 267, 268),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_INDICES)

# The paper's shape-biased subset (A.9) and the benchmark's excluded conditions (docs/metrics.md, model-vs-human): controls that are
# not out-of-distribution, and conditions on which people are below 20 % correct.
SHAPE_DATASETS = ("edge", "cue-conflict", "low-pass", "uniform-noise")
EXCLUDED_CONDITIONS: dict[str, frozenset[str]] = {
    "colour": frozenset({"cr"}),
    "contrast": frozenset({"c100", "c03", "c01"}),
    "high-pass": frozenset({"inf", "0.55", "0.45", "0.4"}),
    "low-pass": frozenset({"0", "15", "40"}),
    "phase-scrambling": frozenset({"0", "150", "180"}),
    "power-equalisation": frozenset({"0"}),
    "false-colour": frozenset({"True"}),
    "rotation": frozenset({"0"}),
    "eidolonI": frozenset({"1-10-10", "64-10-10", "128-10-10"}),
    "eidolonII": frozenset({"1-3-10", "32-3-10", "64-3-10", "128-3-10"}),
    "eidolonIII": frozenset({"1-0-10", "16-0-10", "32-0-10", "64-0-10", "128-0-10"}),
    "uniform-noise": frozenset({"0.0", "0.6", "0.9"}),
}

# Harmonised "which ceiling is which" names, used as JSON keys and table headers.
METRICS = (
    "accuracy",
    "human_accuracy",
    "accuracy_difference",
    "observed_consistency",
    "error_consistency",
    "error_consistency_ceiled_accuracy_bound",
)
REQUIRED_COLUMNS = ("imagename", "object_response", "category", "condition")


# --------------------------------------------------------------------------------------------------
# From ImageNet logits to one of 16 categories


def sixteen_class_scores(logits: torch.Tensor) -> torch.Tensor:
    """``[B, 1000]`` logits → ``[B, 16]``: softmax, then the *mean* probability of each category's members.

    Mean, not sum: with sum, categories with many ImageNet members (109 dogs, 49 birds) would win by count.
    """
    probabilities = logits.float().softmax(dim=-1)
    columns = [probabilities[:, list(members)].mean(dim=-1) for members in CATEGORY_INDICES.values()]
    return torch.stack(columns, dim=-1)


def sixteen_class_decisions(logits: torch.Tensor) -> list[str]:
    """The benchmark's decision: the category with the highest mean member probability."""
    return [CATEGORIES[i] for i in sixteen_class_scores(logits).argmax(dim=-1).tolist()]


# --------------------------------------------------------------------------------------------------
# Response tables


@dataclass(frozen=True)
class Trial:
    """One decision on one stimulus."""

    image_id: str
    category: str
    response: str
    condition: str

    @property
    def correct(self) -> bool:
        return self.response == self.category  # a human "na" (no answer) is simply wrong


Session = dict[str, Trial]  # image_id → trial: one decision maker on one dataset
HumanData = dict[str, dict[str, Session]]  # dataset → subject → session


def short_image_name(imagename: str) -> str:
    """The stimulus part of a trial's image name, without the experiment's prefix (trial, session, ...).

    ``0001_edg_s01_0_oven_00_oven10.png`` → ``oven10.png``;
    ``0001_lp_s01_40_chair_10_n04099969_7577.png`` → ``n04099969_7577.png`` (ImageNet names keep their wnid).
    """
    parts = Path(imagename).name.split("_")
    if len(parts) == 1:
        return parts[0]
    if parts[-2].startswith("n0"):
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def normalise_condition(raw: str) -> str:
    """Write a condition as the benchmark does after ``pandas.read_csv(...).astype(str)``: "0.60" → "0.6"."""
    text = str(raw).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return str(int(text))
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", text):
        return str(float(text))
    if text.lower() in ("true", "false"):
        return text.capitalize()
    return text


def read_response_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a responses CSV (the human raw-data format) with lower-case column names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"responses file not found: {path}")
    with io.StringIO(read_text(path, "responses file"), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip().lower() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
        return [{key.strip().lower(): (value or "").strip() for key, value in row.items() if key} for row in reader]


def trial_from_row(row: Mapping[str, str]) -> Trial:
    return Trial(
        image_id=short_image_name(row["imagename"]),
        category=row["category"],
        response=row["object_response"],
        condition=normalise_condition(row["condition"]),
    )


def load_human_data(raw_dir: str | Path, datasets: Sequence[str] = ()) -> HumanData:
    """Human sessions from one dataset folder (``raw-data/edge``) or the ``raw-data`` root (one folder each);
    with ``datasets``, only those (a named dataset without a folder is an error)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"human raw-data folder not found: {raw_dir}")
    folders = [raw_dir] if any(raw_dir.glob("*.csv")) else sorted(p for p in raw_dir.iterdir() if p.is_dir())
    if datasets:
        missing = [d for d in datasets if d not in {f.name for f in folders}]
        if missing:
            raise DataError(f"{raw_dir}: no human raw data for dataset(s) {', '.join(missing)} "
                            f"(found: {', '.join(f.name for f in folders)})")
        folders = [f for f in folders if f.name in datasets]
    data: HumanData = {}
    for folder in folders:
        subjects: dict[str, Session] = {}
        for path in sorted(folder.glob("*.csv")):
            for row in read_response_rows(path):
                subject = row.get("subj") or path.stem
                trial = trial_from_row(row)
                subjects.setdefault(subject, {})[trial.image_id] = trial
        if subjects:
            data[folder.name] = subjects
    if not data:
        raise DataError(f"no human response CSVs found in {raw_dir} or its sub-folders")
    return data


def assign_to_datasets(rows: Iterable[Mapping[str, str]], humans: HumanData) -> tuple[dict[str, Session], int]:
    """Sort a decision maker's trials into the human datasets they belong to; returns (sessions, unmatched).

    A row's ``dataset`` column, when present, decides. Otherwise a trial belongs to every dataset whose people
    saw the same stimulus (short image name) in the same condition.
    """
    keys = {name: {(t.image_id, t.condition) for s in subjects.values() for t in s.values()}
            for name, subjects in humans.items()}
    sessions: dict[str, Session] = {}
    unmatched = 0
    for row in rows:
        trial = trial_from_row(row)
        named = row.get("dataset")
        targets = [named] if named in humans else [n for n, k in keys.items() if (trial.image_id, trial.condition) in k]
        for name in targets:
            sessions.setdefault(name, {})[trial.image_id] = trial
        unmatched += not targets
    return sessions, unmatched


# --------------------------------------------------------------------------------------------------
# Pairwise metrics (docs/metrics.md, model-vs-human)


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


# --------------------------------------------------------------------------------------------------
# Shape bias (cue-conflict)


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


# --------------------------------------------------------------------------------------------------
# Scoring a decision maker against every human subject


def human_pairs(subjects: Mapping[str, Session], excluded: Iterable[str]) -> dict[str, dict[str, PairScores]]:
    """Scores of every unordered pair of human subjects: the "humans" reference row and the noise ceiling."""
    return {
        f"{first}|{second}": compare_sessions(subjects[first], subjects[second], excluded)
        for first, second in itertools.combinations(sorted(subjects), 2)
    }


def scored_trials(subjects: Mapping[str, Session], excluded: Iterable[str]) -> set[str]:
    """The human trials a dataset is scored on: every subject's images outside the excluded conditions."""
    excluded = set(excluded)
    return {i for session in subjects.values() for i, trial in session.items() if trial.condition not in excluded}


def score_dataset(model: Session, subjects: Mapping[str, Session], dataset: str) -> dict:
    """Per-subject and averaged metrics of ``model`` on one dataset, plus its two ceiled forms.

    The human reference (subject pairs, the noise ceiling) is computed on the trials the model was scored on,
    so that a partial stimulus set compares model and humans on the same images.
    """
    excluded = EXCLUDED_CONDITIONS.get(dataset, frozenset())
    per_subject = {name: compare_sessions(model, session, excluded) for name, session in sorted(subjects.items())}
    per_subject = {name: scores for name, scores in per_subject.items() if scores}
    if not per_subject:
        return {}
    same_trials = {name: {i: t for i, t in session.items() if i in model} for name, session in subjects.items()}
    pairs = {name: scores for name, scores in human_pairs(same_trials, excluded).items() if scores}
    raw_kappa = nested_mean({s: {c: v.error_consistency for c, v in sc.items()} for s, sc in per_subject.items()})
    ceiling = nested_mean({p: {c: v.error_consistency for c, v in sc.items()} for p, sc in pairs.items()})
    noise_ceiled = min(max(abs(raw_kappa) / abs(ceiling), 0.0), 1.0) if pairs and ceiling else math.nan
    result = {
        "trials_compared": len(scored_trials(subjects, excluded) & model.keys()),
        "human_trials": len(scored_trials(subjects, excluded)),
        "excluded_conditions": sorted(excluded),
        "mean": mean_row(per_subject),
        "humans": humans_row(pairs),
        "human_noise_ceiling_kappa": ceiling,
        "error_consistency_ceiled_noise": noise_ceiled,
        "subjects": {
            name: {**condition_means(scores), "conditions": {c: asdict(v) for c, v in scores.items()}}
            for name, scores in per_subject.items()
        },
    }
    if dataset == "cue-conflict":
        result["shape_bias"] = shape_bias(model)
    return result


def score_decision_maker(sessions: Mapping[str, Session], humans: HumanData, exclude_subject: str | None = None) -> dict:
    """Score one decision maker's sessions against the human data of each dataset it took part in.

    ``exclude_subject`` leaves that subject out of the comparison (scoring a person against the *others*).
    Returns ``{"datasets": {...}, "overall": {...}}``; overall values are means over datasets (docs/metrics.md, model-vs-human).
    """
    datasets = {}
    for name, session in sorted(sessions.items()):
        subjects = {s: v for s, v in humans.get(name, {}).items() if s != exclude_subject}
        scored = score_dataset(session, subjects, name)
        if scored:
            datasets[name] = scored
        else:
            log.warning("dataset %s: no trials in common with any human subject; skipped", name)
    if not datasets:
        raise DataError("the responses share no stimulus with the human raw data (check image names / conditions)")
    return summarise_datasets(datasets)


def summarise_datasets(datasets: Mapping[str, dict]) -> dict:
    """Benchmark values: each dataset's ``mean`` (and ``humans``) row averaged over datasets (docs/metrics.md, model-vs-human)."""
    overall = {m: nested_mean({d: r["mean"][m] for d, r in datasets.items()}) for m in METRICS}
    overall["error_consistency_ceiled_noise"] = nested_mean({d: r["error_consistency_ceiled_noise"] for d, r in datasets.items()})
    humans_row = {m: nested_mean({d: r["humans"][m] for d, r in datasets.items()}) for m in METRICS}
    return {"datasets": dict(datasets), "overall": overall, "humans": humans_row, "ceiling_definitions": CEILING_NOTES}


def score_humans_leave_one_out(raw_data: str | Path, datasets: Sequence[str] = ()) -> dict:
    """Every human subject in turn as the "model", scored against the *other* subjects of its dataset.

    This is the human-vs-human reference for a model's numbers: per dataset, each metric is averaged over
    the subjects-as-model. Kappa, observed consistency and accuracy difference are symmetric, so these means
    equal the all-pairs ``humans`` row; the noise-ceiled form differs, because the scored subject also leaves
    the ceiling.
    """
    humans = load_human_data(raw_data, datasets)
    datasets = {}
    for dataset, subjects in sorted(humans.items()):
        if len(subjects) < 2:
            log.warning("dataset %s: a single human subject, nobody to compare with; skipped", dataset)
            continue
        datasets[dataset] = leave_one_out(dataset, subjects)
    if not datasets:
        raise DataError(f"{raw_data}: no dataset with two or more human subjects")
    result = summarise_datasets(datasets)
    result["responses"] = {"decision_maker": "humans (leave one subject out)", "raw_data": str(raw_data)}
    return result


def leave_one_out(dataset: str, subjects: Mapping[str, Session]) -> dict:
    """One dataset of ``score_humans_leave_one_out``: each subject against the others, and the mean over them."""
    excluded = EXCLUDED_CONDITIONS.get(dataset, frozenset())
    per_subject = {}
    for name, session in sorted(subjects.items()):
        scored = score_dataset(session, {s: v for s, v in subjects.items() if s != name}, dataset)
        per_subject[name] = {**scored["mean"], "error_consistency_ceiled_noise": scored["error_consistency_ceiled_noise"]}
        if "shape_bias" in scored:
            per_subject[name]["shape_bias"] = scored["shape_bias"]["shape_bias"]
    keys = next(iter(per_subject.values()))
    mean = {key: nested_mean({name: row[key] for name, row in per_subject.items()}) for key in keys}
    trials = len(scored_trials(subjects, excluded))  # each subject in turn: every human trial is scored
    return {"mean": mean, "error_consistency_ceiled_noise": mean["error_consistency_ceiled_noise"],
            "humans": humans_row(human_pairs(subjects, excluded)), "excluded_conditions": sorted(excluded),
            "subjects": per_subject, "trials_compared": trials, "human_trials": trials}


CEILING_NOTES = {
    "error_consistency": "raw Cohen's kappa on correctness, mean over conditions, then subjects, then datasets",
    "error_consistency_ceiled_accuracy_bound": "per pair kappa / kappa_max, kappa_max = (1-|pA-pB|-c_exp)/(1-c_exp) "
    "(largest kappa the two accuracies allow), aggregated like raw kappa",
    "error_consistency_ceiled_noise": "Brain-Score style: per dataset clip(|mean model-human kappa| / |mean "
    "human-human kappa|, 0, 1), then mean over datasets",
    "accuracy_difference": "squared difference (p_model - p_human)^2, the benchmark's default norm",
}


def score_responses_file(responses: str | Path, raw_data: str | Path, datasets: Sequence[str] = ()) -> dict:
    """``vito eval model-vs-human --responses FILE``: score an existing responses CSV without a model.

    When the file's ``subj`` column names one of the human subjects (a human raw-data CSV), that subject is
    left out of the comparison, so a person is scored against the *other* people only.
    """
    rows = read_response_rows(responses)
    humans = load_human_data(raw_data, datasets)
    sessions, unmatched = assign_to_datasets(rows, humans)
    if unmatched:
        log.warning("%d of %d trials match no human stimulus and were skipped", unmatched, len(rows))
    names = {row.get("subj") for row in rows}
    name = names.pop() if len(names) == 1 else None
    excluded = name if any(name in subjects for subjects in humans.values()) else None
    result = score_decision_maker(sessions, humans, exclude_subject=excluded)
    result["responses"] = {"file": str(responses), "trials": len(rows), "unmatched_trials": unmatched,
                           "decision_maker": name, "excluded_subject": excluded}
    return result


# --------------------------------------------------------------------------------------------------
# Running a classifier on the stimuli


def stimulus_rows(stimuli_dir: str | Path, humans: HumanData) -> tuple[list[dict[str, str]], list[Path], int]:
    """Match each stimulus image to the human datasets that showed it; returns (rows, paths, unmatched).

    A stimulus belongs to every dataset whose trials used its short image name; when a folder on its path is
    named after a dataset (``.../low-pass/...``), only that dataset. Category and condition come from the
    human trials, so the model is scored on exactly what people saw.
    """
    stimuli_dir = Path(stimuli_dir)
    if not stimuli_dir.is_dir():
        raise DataError(f"stimulus folder not found: {stimuli_dir}")
    lookup: dict[str, dict[str, Trial]] = {}
    for name, subjects in humans.items():
        for session in subjects.values():
            for image_id, trial in session.items():
                lookup.setdefault(image_id, {}).setdefault(name, trial)
    rows, paths, unmatched = [], [], 0
    for path in list_images(stimuli_dir):
        matches = lookup.get(short_image_name(path.name), {})
        named = [d for d in matches if d in path.relative_to(stimuli_dir).parts]
        for dataset in named or list(matches):
            trial = matches[dataset]
            rows.append({"imagename": path.name, "category": trial.category, "condition": trial.condition,
                         "dataset": dataset})
            paths.append(path)
        unmatched += not matches
    if not rows:
        raise DataError(f"{stimuli_dir}: no image matches a stimulus of the human data ({', '.join(humans)})")
    return rows, paths, unmatched


def run_model_vs_human(
    classifier: ImageNetClassifier,
    stimuli_dir: str | Path,
    raw_data: str | Path,
    name: str = "model",
    datasets: Sequence[str] = (),
    **predict_kwargs,
) -> tuple[dict, list[dict[str, str]]]:
    """Classify the stimuli into the 16 categories and score the decisions; returns (results, responses)."""
    humans = load_human_data(raw_data, datasets)
    rows, paths, unmatched = stimulus_rows(stimuli_dir, humans)
    if unmatched:
        log.warning("%d images under %s match no human stimulus and were skipped", unmatched, stimuli_dir)
    unique = sorted(set(paths))
    found = predict_logits(classifier, unique, desc="model-vs-human", **predict_kwargs)
    decision = dict(zip([unique[i] for i in found.kept], sixteen_class_decisions(found.logits)))
    responses = [{"subj": name, "trial": str(i + 1), **row, "object_response": decision[path]}
                 for i, (row, path) in enumerate(zip(rows, paths)) if path in decision]
    sessions, _ = assign_to_datasets(responses, humans)
    result = score_decision_maker(sessions, humans)
    result["responses"] = {"decision_maker": name, "trials": len(responses), "unmatched_images": unmatched,
                           "unreadable_images": [list(item) for item in found.skipped]}
    return result, responses


RESPONSE_COLUMNS = ("subj", "trial", "object_response", "category", "condition", "imagename", "dataset")
DETAILS = "model_vs_human.json"  # the per-dataset, per-subject, per-condition breakdown (an artifact)
PICTURE = "model_vs_human.png"


def decision_maker(result: Mapping) -> str:
    """The row label of a result: the model's name, the responding subject, or the leave-one-out humans."""
    return result.get("responses", {}).get("decision_maker") or "responses"


def save_details(result: dict, out_dir: str | Path, responses: list[dict[str, str]] | None = None) -> dict[str, str]:
    """``OUT/model_vs_human.json`` (every number behind the Result) and, for a model, ``OUT/responses.csv``."""
    out_dir = Path(out_dir)
    write_json(out_dir / DETAILS, result)
    artifacts = {"details": DETAILS}
    if responses:
        with atomic_write(out_dir / "responses.csv") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESPONSE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(responses)
        artifacts["responses"] = "responses.csv"
    return artifacts


def load_results(items: Iterable[str | Path]) -> dict[str, dict]:
    """Earlier ``vito eval model-vs-human`` outputs (folders or their ``model_vs_human.json``), by row label.

    A row is labelled with its decision maker and the datasets it was scored on, so that rows over different
    datasets are never mistaken for one another.
    """
    loaded: dict[str, dict] = {}
    for item in items:
        path = Path(item) / DETAILS if Path(item).is_dir() else Path(item)
        if not path.is_file():
            raise DataError(f"no model-vs-human result at {path}")
        result = read_json(path, "model-vs-human result")
        if not (isinstance(result, dict) and isinstance(result.get("datasets"), dict)
                and isinstance(result.get("overall"), dict) and "humans" in result):
            raise DataError(f"{path} is not a model-vs-human result (it needs 'datasets', 'overall' and 'humans'; "
                            f"give the {DETAILS} of an earlier run)")
        name = row_label(result)
        loaded[name if name not in loaded else f"{name} [{path.parent.name}]"] = result
    return loaded


def row_label(result: Mapping) -> str:
    return f"{decision_maker(result)} ({', '.join(sorted(result['datasets']))})"


TABLE_COLUMNS = (
    ("accuracy_difference", "accuracy diff. (sq.) ↓"),
    ("observed_consistency", "obs. consistency ↑"),
    ("error_consistency", "error consistency (raw κ) ↑"),
    ("error_consistency_ceiled_accuracy_bound", "κ/κ_max ↑"),
    ("error_consistency_ceiled_noise", "κ / human ceiling ↑"),
    ("accuracy", "accuracy"),
)
METRIC_KINDS = {
    "accuracy": ("proportion", "accuracy (16 classes)"),
    "human_accuracy": ("proportion", "human accuracy (same trials)"),
    "accuracy_difference": ("proportion", "accuracy difference (squared)"),
    "observed_consistency": ("proportion", "observed consistency"),
    "error_consistency": ("signed", "error consistency (raw κ)"),
    "error_consistency_ceiled_accuracy_bound": ("signed", "κ / κ_max"),
    "error_consistency_ceiled_noise": ("proportion", "κ / human ceiling"),
}


def table_rows(results: Mapping[str, dict]) -> list[tuple[str, dict[str, float]]]:
    """(label, overall metrics) per decision maker, then the humans' reference row of each distinct dataset set."""
    rows = [(name, result["overall"]) for name, result in results.items()]
    humans_seen = {}
    for result in results.values():
        key = ", ".join(sorted(result["datasets"]))
        humans_seen.setdefault(key, result["humans"])
    rows += [(f"humans, subject pairs ({key})", values) for key, values in humans_seen.items()]
    return rows


def draw_table(results: Mapping[str, dict], out: Path) -> Path:
    rows = table_rows(results)
    cells = [[_cell(values.get(key, math.nan)) for key, _ in TABLE_COLUMNS] for _, values in rows]
    return plot_consistency_table([label for label, _ in rows], [title for _, title in TABLE_COLUMNS], cells, out)


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def evaluate_model_vs_human(
    out: str | Path,
    raw_data: str | Path | None = None,
    responses: str | Path | None = None,
    classifier: ImageNetClassifier | None = None,
    stimuli: str | Path | None = None,
    humans: bool = False,
    compare: Iterable[str | Path] = (),
    datasets: Sequence[str] = (),
    **predict_kwargs,
) -> tuple[dict | None, dict[str, dict]]:
    """Score a responses file, every human against the others (``humans``), or a classifier on the stimuli;
    writes the details and the table picture (with the earlier results in ``compare``) into ``out``.

    Returns (this run's scores, or None with only ``compare``; every row of the table by label).
    """
    earlier = load_results(compare)
    result, rows = None, None
    if responses is not None or humans or classifier is not None:
        if raw_data is None:
            raise DataError("model-vs-human needs --raw-data DIR (the human raw-data CSVs)")
        if humans:
            result = score_humans_leave_one_out(raw_data, datasets)
        elif responses is not None:
            result = score_responses_file(responses, raw_data, datasets)
        else:
            if stimuli is None:
                raise DataError("scoring a model needs --stimuli DIR (the stimulus images)")
            result, rows = run_model_vs_human(classifier, stimuli, raw_data, name=classifier.encoder.name,
                                              datasets=datasets, **predict_kwargs)
        result["artifacts"] = save_details(result, out, rows)
    elif not earlier:
        raise DataError("model-vs-human needs --responses FILE, --humans, --encoder ENC, or --compare RESULTS")
    if result is not None:
        name = row_label(result)
        earlier = {name if name not in earlier else f"{name} [this run]": result, **earlier}
    draw_table(earlier, Path(out) / PICTURE)
    return result, earlier


def coverage_of(result: dict, datasets: Sequence[str]) -> Coverage:
    """Trials scored out of the human trials of the datasets asked for (or those the decision maker took part in)."""
    scored = result["datasets"]
    used = sum(d.get("trials_compared", 0) for d in scored.values())
    expected = sum(d.get("human_trials", 0) for d in scored.values())
    missing = [d for d in datasets if d not in scored]
    note = f"trials of {', '.join(sorted(scored))}" + (f"; no trials for {', '.join(missing)}" if missing else "")
    if missing:
        expected += 1  # a requested dataset with nothing scored: partial whatever its size
    return Coverage(used, max(expected, used), note)


@dataclass
class ModelVsHumanSettings(InferenceSettings):
    raw_data: Path | None = field(default=None, metadata={"help": "human raw-data root or one dataset's folder"})
    stimuli: Path | None = field(default=None, metadata={"help": "stimulus images (searched recursively)"})
    responses: Path | None = field(default=None, metadata={
        "help": "score this responses CSV instead of a model (a human subject's own CSV is scored against the "
        "other subjects only)"})
    humans: bool = field(default=False, metadata={
        "help": "score every human subject against the others (leave one out) instead of a model"})
    datasets: list[str] = field(default_factory=list, metadata={
        "help": "comma-separated datasets (the paper's: edge,cue-conflict,low-pass,uniform-noise; default: all "
        "found under --raw-data)", "cli": {"sep": ","}})
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "earlier model-vs-human output folders to put in the same table", "cli": {"nargs": "*"}})


@register
class ModelVsHuman(Evaluation):
    name = "model-vs-human"
    Settings = ModelVsHumanSettings
    needs_encoder = "optional"  # --responses, --humans and --compare score without a model
    uses_classifier = True
    group = "human"
    help = "accuracy difference, observed and error consistency with human observers"
    description = ("Classify model-vs-human stimuli into 16 categories and compare trial by trial with every human "
                   "subject; or score an existing responses CSV (--responses) or the humans themselves (--humans) "
                   "without a model.")

    def check(self, settings: ModelVsHumanSettings, has_encoder: bool) -> None:
        modes = [has_encoder, settings.responses is not None, settings.humans]
        if sum(modes) > 1:
            raise VitoError("model-vs-human scores one of --encoder, --responses or --humans at a time")
        if not any(modes) and not settings.compare:
            raise DataError("model-vs-human needs --responses FILE, --humans, --encoder ENC, or --compare RESULTS")
        if any(modes) and settings.raw_data is None:
            raise DataError("model-vs-human needs --raw-data DIR (the human raw-data CSVs)")
        if has_encoder and settings.stimuli is None:
            raise DataError("scoring a model needs --stimuli DIR (the stimulus images)")
        load_results(settings.compare)  # before the evaluation, not after it

    def run(self, encoder: Encoder | None, settings: ModelVsHumanSettings, out_dir: Path) -> Result:
        classifier = attach_head(encoder, settings.classifier) if encoder is not None else None
        scored, table = evaluate_model_vs_human(out_dir, settings.raw_data, settings.responses, classifier,
                                                settings.stimuli, settings.humans, settings.compare, settings.datasets,
                                                **settings.predict_kwargs())
        tables = {"decision makers": [{"decision maker": label, **{key: values.get(key) for key, _ in TABLE_COLUMNS}}
                                      for label, values in table_rows(table)]}
        if scored is None:
            count = len(settings.compare)
            return Result(self.name, {}, {"mode": "compare"}, Coverage(count, count, "earlier results in the table"),
                          tables=tables, pictures=[PICTURE])
        metrics = {key: Metric(scored["overall"].get(key), *METRIC_KINDS[key]) for key in METRIC_KINDS}
        if "cue-conflict" in scored["datasets"] and "shape_bias" in scored["datasets"]["cue-conflict"]:
            bias = scored["datasets"]["cue-conflict"]["shape_bias"]
            metrics["shape_bias"] = Metric(bias["shape_bias"] if isinstance(bias, dict) else bias, "proportion",
                                           "shape bias (cue-conflict)")
        tables["per dataset"] = [{"dataset": name, **{key: d["mean"].get(key) for key in METRIC_KINDS if key in d["mean"]},
                                  "error_consistency_ceiled_noise": d.get("error_consistency_ceiled_noise"),
                                  "humans_error_consistency": d["humans"]["error_consistency"]}
                                 for name, d in scored["datasets"].items()]
        skipped = [tuple(item) for item in scored.get("responses", {}).get("unreadable_images", [])]
        mode = "model" if encoder is not None else "humans" if settings.humans else "responses"
        return Result(self.name, metrics, {"mode": mode, "decision_maker": decision_maker(scored),
                                           "datasets_scored": sorted(scored["datasets"])},
                      coverage_of(scored, settings.datasets), tables=tables, pictures=[PICTURE], skipped=skipped,
                      artifacts=scored.get("artifacts", {}))
