"""Scoring a decision maker against every human subject: a model on the stimuli, a responses file, or each
human in turn against the others (leave one out).

Everything but ``run_model_vs_human`` is plain bookkeeping on response tables and works without a model: a
model's responses, or a human subject's, are scored against the human raw data the same way.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from vito.errors import DataError
from vito.eval.core.classifier import ImageNetClassifier, predict_logits
from vito.eval.core.inputs import list_images
from vito.eval.human.consistency import (
    CEILING_NOTES,
    METRICS,
    PairScores,
    compare_sessions,
    condition_means,
    humans_row,
    mean_row,
    nested_mean,
    shape_bias,
)
from vito.eval.human.trials import (
    DATASETS,
    EXCLUDED_CONDITIONS,
    FOLDER_DATASETS,
    HumanData,
    Session,
    Trial,
    assign_to_datasets,
    load_human_data,
    read_response_rows,
    short_image_name,
    sixteen_class_decisions,
)

log = logging.getLogger(__name__)


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


def score_decision_maker(
    sessions: Mapping[str, Session], humans: HumanData, exclude_subject: str | None = None
) -> dict:
    """Score one decision maker's sessions against the human data of each dataset it took part in.

    ``exclude_subject`` leaves that subject out of the comparison (scoring a person against the *others*).
    Returns ``{"datasets": {...}, "overall": {...}}``; overall values are means over datasets (docs/metrics.md,
    model-vs-human).
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
    """Benchmark values: each dataset's ``mean`` (and ``humans``) row averaged over datasets (docs/metrics.md,
    model-vs-human)."""
    overall = {m: nested_mean({d: r["mean"][m] for d, r in datasets.items()}) for m in METRICS}
    overall["error_consistency_ceiled_noise"] = nested_mean({d: r["error_consistency_ceiled_noise"]
                                                             for d, r in datasets.items()})
    humans = {m: nested_mean({d: r["humans"][m] for d, r in datasets.items()}) for m in METRICS}
    return {"datasets": dict(datasets), "overall": overall, "humans": humans, "ceiling_definitions": CEILING_NOTES}


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
        per_subject[name] = {**scored["mean"],
                             "error_consistency_ceiled_noise": scored["error_consistency_ceiled_noise"]}
        if "shape_bias" in scored:
            per_subject[name]["shape_bias"] = scored["shape_bias"]["shape_bias"]
    keys = next(iter(per_subject.values()))
    mean = {key: nested_mean({name: row[key] for name, row in per_subject.items()}) for key in keys}
    trials = len(scored_trials(subjects, excluded))  # each subject in turn: every human trial is scored
    return {"mean": mean, "error_consistency_ceiled_noise": mean["error_consistency_ceiled_noise"],
            "humans": humans_row(human_pairs(subjects, excluded)), "excluded_conditions": sorted(excluded),
            "subjects": per_subject, "trials_compared": trials, "human_trials": trials}


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


def stimulus_rows(stimuli_dir: str | Path, humans: HumanData) -> tuple[list[dict[str, str]], list[Path], int]:
    """Match each stimulus image to the human datasets that showed it; returns (rows, paths, unmatched).

    A stimulus belongs to every dataset whose trials used its short image name; when a folder on its path names
    a dataset (``.../low-pass/...``, or texture-vs-shape's ``edges/``: ``FOLDER_DATASETS``), only that dataset.
    Category and condition come from the human trials, so the model is scored on exactly what people saw. Two
    files that would stand for one stimulus of one dataset (``edges/a/x.png`` and ``silhouettes/a/x.png`` with
    no folder naming a dataset) are an error before anything is scored: the scores would be of the wrong images.
    """
    stimuli_dir = Path(stimuli_dir)
    if not stimuli_dir.is_dir():
        raise DataError(f"stimulus folder not found: {stimuli_dir}")
    lookup: dict[str, dict[str, Trial]] = {}
    for name, subjects in humans.items():
        for session in subjects.values():
            for image_id, trial in session.items():
                lookup.setdefault(image_id, {}).setdefault(name, trial)
    shown = [(path, _datasets_shown(path, stimuli_dir, lookup, humans)) for path in list_images(stimuli_dir)]
    _refuse_ambiguous(shown, stimuli_dir, humans)
    rows, paths = [], []
    for path, datasets in shown:
        for dataset in datasets:
            trial = lookup[short_image_name(path.name)][dataset]
            rows.append({"imagename": path.name, "category": trial.category, "condition": trial.condition,
                         "dataset": dataset})
            paths.append(path)
    if not rows:
        raise DataError(f"{stimuli_dir}: no image matches a stimulus of the human data ({', '.join(humans)})")
    return rows, paths, sum(not datasets for _, datasets in shown)


def _datasets_shown(path: Path, stimuli_dir: Path, lookup: dict[str, dict[str, Trial]], humans: HumanData) -> list[str]:
    """The datasets whose people saw the stimulus ``path`` (by its short name), restricted to the datasets its
    folders name, if any does."""
    matches = lookup.get(short_image_name(path.name), {})
    known = set(humans) | set(DATASETS)
    named = {FOLDER_DATASETS.get(part, part) for part in path.relative_to(stimuli_dir).parts[:-1]} & known
    return [dataset for dataset in matches if dataset in named] if named else list(matches)


def _refuse_ambiguous(shown: list[tuple[Path, list[str]]], stimuli_dir: Path, humans: HumanData) -> None:
    files: dict[tuple[str, str], list[Path]] = {}
    for path, datasets in shown:
        for dataset in datasets:
            files.setdefault((dataset, short_image_name(path.name)), []).append(path)
    for (dataset, short), paths in files.items():
        if len(paths) > 1:
            folders = ", ".join(f"{name}/" for name in sorted(humans))
            raise DataError(
                f"{stimuli_dir}: {paths[0]} and {paths[1]} both stand for the {dataset} stimulus {short!r} and no "
                f"folder on their paths names a dataset; put each dataset's stimuli in a folder named after it "
                f"({folders} or texture-vs-shape's edges/, filled-silhouettes/, style-transfer-preprocessed-512/)")


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
                           "unreadable_images": [list(item) for item in found.skipped],
                           "datasets_without_stimuli": _without_stimuli(humans, rows)}
    return result, responses


def _without_stimuli(humans: HumanData, rows: list[dict[str, str]]) -> dict[str, int]:
    """The human datasets (asked for, or all under --raw-data) that no stimulus matched, with their human trials:
    scored on none of them, the model's numbers cover only part of what was asked."""
    shown = {row["dataset"] for row in rows}
    return {name: len(scored_trials(subjects, EXCLUDED_CONDITIONS.get(name, frozenset())))
            for name, subjects in sorted(humans.items()) if name not in shown}
