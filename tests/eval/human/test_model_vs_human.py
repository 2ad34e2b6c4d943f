"""`vito eval model-vs-human` through the command line: bad inputs, several datasets, coverage, a random model."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.eval.human.helpers import write_csv
from vito.cli import main
from vito.errors import DataError
from vito.eval.core.result import read_result
from vito.eval.human.scoring import score_responses_file, scored_trials
from vito.eval.human.trials import EXCLUDED_CONDITIONS, load_human_data, read_response_rows


def test_bad_inputs_are_clear_errors(shared_data, tmp_path, capsys):
    raw = shared_data / "model-vs-human" / "raw-data" / "edge"
    with pytest.raises(DataError, match="not found"):
        score_responses_file(tmp_path / "missing.csv", raw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no human response CSVs"):
        load_human_data(tmp_path / "empty")
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "raw-data folder not found" in capsys.readouterr().err
    assert main(["eval", "model-vs-human", "--out", str(tmp_path)]) == 2  # nothing to score


@pytest.mark.slow
def test_random_model_end_to_end_on_real_stimuli(shared_data, tmp_path):
    """A random-init ResNet-18 with a random linear head, through the CLI, on the real edge + cue-conflict
    stimuli: it must run, match every stimulus to its human trials, and score near chance."""
    import json

    from torch import nn

    from vito.eval.probes.heads import save_linear_head

    torch.manual_seed(0)
    save_linear_head(tmp_path / "head.pt", nn.Linear(512, 1000))
    code = main(["eval", "model-vs-human", "--encoder", "timm:resnet18", "--random-init",
                 "--classifier", str(tmp_path / "head.pt"),
                 "--stimuli", str(shared_data / "texture-vs-shape" / "stimuli"),
                 "--raw-data", str(shared_data / "model-vs-human" / "raw-data"),
                 "--out", str(tmp_path / "out"), "--image-size", "64", "--batch-size", "32", "--device", "cpu"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "model_vs_human.json").read_text())
    assert set(result["datasets"]) == {"edge", "cue-conflict"}
    for dataset in ("edge", "cue-conflict"):
        scored = result["datasets"][dataset]
        assert scored["trials_compared"] == 160 and len(scored["subjects"]) == 10
        assert scored["mean"]["accuracy"] < 0.3  # chance is 1/16
        assert abs(scored["mean"]["error_consistency"]) < 0.3
    assert 0 <= result["datasets"]["cue-conflict"]["shape_bias"]["trials"] <= 160
    with open(tmp_path / "out" / "responses.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 320
    assert (tmp_path / "out" / "model_vs_human.png").stat().st_size > 1000


def test_a_partial_responses_set_over_several_datasets_is_flagged(shared_data, tmp_path) -> None:
    raw = shared_data / "model-vs-human" / "raw-data"
    rows = read_response_rows(sorted((raw / "edge").glob("*.csv"))[0])[:50]
    path = write_csv(tmp_path / "mine.csv", [{**r, "subj": "mine", "object_response": "dog"} for r in rows])
    datasets = "edge,cue-conflict,low-pass,uniform-noise"
    assert main(["eval", "model-vs-human", "--responses", str(path), "--raw-data", str(raw), "--datasets", datasets,
                 "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert result.settings["datasets"] == datasets.split(",") and result.coverage.partial
    assert "no trials for" in result.coverage.note
    assert 0 <= result.value("accuracy") <= 1
    labels = [row["decision maker"] for row in result.tables["decision makers"]]
    assert labels[0].startswith("mine (") and any(label.startswith("humans, subject pairs") for label in labels)


def test_a_complete_responses_file_is_not_partial_where_conditions_are_excluded(shared_data, tmp_path) -> None:
    """low-pass leaves 3 of its 8 conditions out of every metric: they count neither as used nor as expected."""
    raw = shared_data / "model-vs-human" / "raw-data"
    responses = sorted((raw / "low-pass").glob("*.csv"))[0]
    assert main(["eval", "model-vs-human", "--responses", str(responses), "--raw-data", str(raw),
                 "--datasets", "low-pass", "--out", str(tmp_path)]) == 0
    coverage = read_result(tmp_path).coverage
    assert not coverage.partial and coverage.used == coverage.expected == 800  # 5 of 8 conditions x 160


def test_several_datasets_in_one_call(shared_data, tmp_path) -> None:
    raw = shared_data / "model-vs-human" / "raw-data"
    datasets = ["edge", "cue-conflict", "low-pass", "uniform-noise"]
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(raw), "--datasets", ",".join(datasets),
                 "--out", str(tmp_path)]) == 0
    result = read_result(tmp_path)
    assert result.settings["datasets_scored"] == sorted(datasets)
    assert [row["dataset"] for row in result.tables["per dataset"]] == sorted(datasets)
    assert not result.coverage.partial
    humans = load_human_data(raw, datasets)
    assert result.coverage.used == sum(len(scored_trials(subjects, EXCLUDED_CONDITIONS.get(name, ())))
                                       for name, subjects in humans.items()) > 0  # every human trial, not 0 of 0
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(raw), "--datasets", "edge,nonsense",
                 "--out", str(tmp_path / "bad")]) == 2
