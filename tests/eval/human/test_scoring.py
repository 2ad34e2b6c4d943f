"""Scoring decision makers against real human data: a subject against the others, every subject in turn, a model's
responses file, and the human reference on the trials the model saw."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.eval.human.helpers import write_csv
from vito.errors import DataError
from vito.eval.human.consistency import humans_row
from vito.eval.human.scoring import human_pairs, score_dataset, score_responses_file, stimulus_rows
from vito.eval.human.trials import EXCLUDED_CONDITIONS, Trial, load_human_data, read_response_rows


def _direct_kappa(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Cohen's kappa and observed agreement, written out independently of vito."""
    observed = np.mean(a == b)
    expected = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return (observed - expected) / (1 - expected), observed


def _correct_by_image(path: Path) -> dict[str, bool]:
    with open(path) as handle:
        return {row["imagename"].split("_")[-1]: row["object_response"] == row["category"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("dataset", ["edge", "cue-conflict"])
def test_human_vs_human_matches_a_direct_computation(shared_data, dataset):
    folder = shared_data / "model-vs-human" / "raw-data" / dataset
    files = sorted(folder.glob("*.csv"))
    result = score_responses_file(files[0], folder)
    subjects = result["datasets"][dataset]["subjects"]
    assert result["responses"]["decision_maker"] == "subject-01"
    assert "subject-01" not in subjects and len(subjects) == len(files) - 1

    first = _correct_by_image(files[0])
    kappas, observed = [], []
    for path in files[1:]:
        other = _correct_by_image(path)
        ids = sorted(first)
        kappa, agree = _direct_kappa(np.array([first[i] for i in ids]), np.array([other[i] for i in ids]))
        name = "subject-" + path.stem.split("subject-")[1][:2]
        assert subjects[name]["error_consistency"] == pytest.approx(kappa, abs=1e-12)
        assert subjects[name]["observed_consistency"] == pytest.approx(agree, abs=1e-12)
        kappas.append(kappa)
        observed.append(agree)
    assert result["overall"]["error_consistency"] == pytest.approx(np.mean(kappas), abs=1e-12)
    assert result["overall"]["observed_consistency"] == pytest.approx(np.mean(observed), abs=1e-12)

    pairs = [_direct_kappa(*(np.array([a[i] for i in sorted(a)]) for a in (_correct_by_image(p), _correct_by_image(q))))[0]
             for p, q in itertools.combinations(files[1:], 2)]
    assert result["datasets"][dataset]["human_noise_ceiling_kappa"] == pytest.approx(np.mean(pairs), abs=1e-12)

    from_root = score_responses_file(files[0], folder.parent)  # the raw-data root: matched by image name
    assert list(from_root["datasets"]) == [dataset] and from_root["overall"] == result["overall"]


def _subject(path: Path) -> str:
    return "subject-" + path.stem.split("subject-")[1][:2]


@pytest.mark.parametrize("dataset", ["edge", "cue-conflict"])
def test_leave_one_subject_out_through_the_cli(shared_data, tmp_path, dataset):
    """`--humans`: each subject against the others, written out with a direct kappa; means over subjects."""
    import json

    from vito.cli import main

    folder = shared_data / "model-vs-human" / "raw-data" / dataset
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(folder), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "model_vs_human.json").read_text())
    correct = {_subject(path): _correct_by_image(path) for path in sorted(folder.glob("*.csv"))}
    ids = sorted(next(iter(correct.values())))
    kappa = {(a, b): _direct_kappa(np.array([correct[a][i] for i in ids]), np.array([correct[b][i] for i in ids]))[0]
             for a in correct for b in correct if a != b}
    scored = result["datasets"][dataset]["subjects"]
    for name in correct:
        others = [kappa[name, other] for other in correct if other != name]
        ceiling = np.mean([kappa[a, b] for a, b in itertools.combinations(sorted(correct), 2) if name not in (a, b)])
        assert scored[name]["error_consistency"] == pytest.approx(np.mean(others), abs=1e-12)
        assert scored[name]["error_consistency_ceiled_noise"] == pytest.approx(min(abs(np.mean(others)) / ceiling, 1))
    all_pairs = np.mean([kappa[a, b] for a, b in itertools.combinations(sorted(correct), 2)])
    assert result["overall"]["error_consistency"] == pytest.approx(all_pairs, abs=1e-12)  # kappa is symmetric
    assert result["humans"]["error_consistency"] == pytest.approx(all_pairs, abs=1e-12)
    accuracy = np.mean([np.mean(list(c.values())) for c in correct.values()])
    assert result["overall"]["accuracy"] == pytest.approx(accuracy) and result["humans"]["accuracy"] == pytest.approx(accuracy)
    assert "humans (leave one subject out)" in (tmp_path / "result.md").read_text()


def test_a_model_responses_file_is_compared_with_every_subject(shared_data, tmp_path):
    folder = shared_data / "model-vs-human" / "raw-data" / "edge"
    rows = read_response_rows(sorted(folder.glob("*.csv"))[0])
    path = write_csv(tmp_path / "model.csv", [{**row, "subj": "my-model", "object_response": "dog"} for row in rows])
    result = score_responses_file(path, folder)
    assert result["responses"]["decision_maker"] == "my-model" and result["responses"]["excluded_subject"] is None
    assert len(result["datasets"]["edge"]["subjects"]) == 10
    assert result["overall"]["accuracy"] == pytest.approx(10 / 160)  # 10 dog drawings


def test_humans_are_scored_on_the_trials_the_model_saw(shared_data) -> None:
    subjects = load_human_data(shared_data / "model-vs-human" / "raw-data" / "edge")["edge"]
    first = next(iter(subjects.values()))
    seen = dict(list(first.items())[:40])  # a partial stimulus set: 40 of 160 images
    model = {i: Trial(i, t.category, "dog", t.condition) for i, t in seen.items()}
    scored = score_dataset(model, subjects, "edge")
    on_seen = {name: {i: t for i, t in session.items() if i in seen} for name, session in subjects.items()}
    reference = humans_row(human_pairs(on_seen, EXCLUDED_CONDITIONS.get("edge", ())))
    assert scored["humans"]["error_consistency"] == pytest.approx(reference["error_consistency"])
    everything = humans_row(human_pairs(subjects, ()))
    assert scored["humans"]["accuracy"] != pytest.approx(everything["accuracy"])  # not all 160 trials
    assert scored["trials_compared"] == 40 and scored["human_trials"] == 160


def _raw_data_like_edge(shared_data: Path, root: Path, names: tuple[str, ...]) -> Path:
    """Human raw data for ``names``, each a copy of the real edge CSVs (same stimuli, same short names)."""
    for name in names:
        (root / name).mkdir(parents=True)
        for path in sorted((shared_data / "model-vs-human" / "raw-data" / "edge").glob("*.csv"))[:2]:
            (root / name / path.name.replace("edge", name)).write_text(path.read_text())
    return root


def _stimulus(shared_data: Path, folder: Path, name: str = "oven10.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = shared_data / "texture-vs-shape" / "stimuli" / "edges" / "oven" / name
    (folder / name).write_bytes(source.read_bytes())
    return folder / name


def test_texture_vs_shape_folder_names_say_which_dataset_a_stimulus_belongs_to(shared_data, tmp_path) -> None:
    humans = load_human_data(_raw_data_like_edge(shared_data, tmp_path / "raw", ("edge", "silhouette")))
    edge = _stimulus(shared_data, tmp_path / "stimuli" / "edges" / "oven")
    silhouette = _stimulus(shared_data, tmp_path / "stimuli" / "filled-silhouettes" / "oven")
    rows, paths, unmatched = stimulus_rows(tmp_path / "stimuli", humans)
    assert sorted((row["dataset"], path) for row, path in zip(rows, paths)) == [("edge", edge),
                                                                                 ("silhouette", silhouette)]
    assert unmatched == 0


def test_one_stimulus_found_in_two_folders_that_name_no_dataset_is_refused_before_scoring(shared_data,
                                                                                          tmp_path) -> None:
    humans = load_human_data(_raw_data_like_edge(shared_data, tmp_path / "raw", ("edge", "silhouette")))
    first = _stimulus(shared_data, tmp_path / "stimuli" / "drawings" / "oven")
    second = _stimulus(shared_data, tmp_path / "stimuli" / "shapes" / "oven")
    with pytest.raises(DataError, match="both stand for the edge stimulus 'oven10.png'") as error:
        stimulus_rows(tmp_path / "stimuli", humans)
    assert str(first) in str(error.value) and str(second) in str(error.value) and "edges/" in str(error.value)


def test_datasets_without_stimuli_make_the_result_partial_and_are_named(shared_data, tmp_path, capsys) -> None:
    from torch import nn

    from vito.cli import main
    from vito.eval.core.result import read_result
    from vito.eval.probes.heads import save_linear_head

    raw = _raw_data_like_edge(shared_data, tmp_path / "raw", ("edge", "sketch", "stylized"))
    for name in ("oven10.png", "oven4.png"):
        _stimulus(shared_data, tmp_path / "stimuli" / "edge", name)
    torch.manual_seed(0)
    save_linear_head(tmp_path / "head.pt", nn.Linear(512, 1000))
    assert main(["eval", "model-vs-human", "--encoder", "timm:resnet18", "--random-init", "--classifier",
                 str(tmp_path / "head.pt"), "--stimuli", str(tmp_path / "stimuli"), "--raw-data", str(raw),
                 "--out", str(tmp_path / "out"), "--image-size", "32", "--device", "cpu"]) == 0
    result = read_result(tmp_path / "out")
    assert result.coverage.partial and "no stimuli for sketch, stylized" in result.coverage.note
    assert result.coverage.used == 2 and result.coverage.expected == 3 * 160  # edge's 2 of 160, sketch and stylized
    assert "no stimuli for sketch, stylized" in capsys.readouterr().out  # the summary line
