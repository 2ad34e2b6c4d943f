"""Model-vs-human metrics against the spec's test vectors and a direct computation on real human data."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from vito.eval.human import scoring as human
from vito.eval.human.scoring import Trial


def test_category_lists_match_the_spec_table():
    sizes = {name: len(members) for name, members in human.CATEGORY_INDICES.items()}
    assert sizes == {"airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7, "car": 3, "cat": 6,
                     "chair": 4, "clock": 3, "dog": 109, "elephant": 2, "keyboard": 2, "knife": 1, "oven": 1, "truck": 8}
    everything = [i for members in human.CATEGORY_INDICES.values() for i in members]
    assert len(set(everything)) == 207
    assert list(human.CATEGORIES) == sorted(human.CATEGORIES)


# Spec §1.1's table, copied verbatim (ranges inclusive).
SPEC_INDICES = {
    "airplane": "404", "bear": "294-297", "bicycle": "444, 671",
    "bird": "8, 10-16, 18-20, 22-24, 80-83, 87-96, 98-100, 127-133, 135-145",
    "boat": "472, 554, 625, 814, 914", "bottle": "440, 720, 737, 898-899, 901, 907", "car": "436, 511, 817",
    "cat": "281-286", "chair": "423, 559, 765, 857", "clock": "409, 530, 892",
    "dog": "152-191, 193-203, 205-226, 228-241, 243-250, 252-257, 259, 261-263, 265-268",
    "elephant": "385-386", "keyboard": "508, 878", "knife": "499", "oven": "766",
    "truck": "555, 569, 656, 675, 717, 734, 864, 867",
}


def _expand(ranges: str) -> tuple[int, ...]:
    parts = [part.split("-") for part in ranges.split(", ")]
    return tuple(i for part in parts for i in range(int(part[0]), int(part[-1]) + 1))


def test_category_members_are_exactly_the_spec_indices():
    assert {name: _expand(text) for name, text in SPEC_INDICES.items()} == human.CATEGORY_INDICES


def test_excluded_conditions_are_spelled_like_the_real_raw_data(shared_data):
    """A condition excluded under a spelling the data never uses (e.g. "0.60" vs "0.6") would silently count."""
    raw = shared_data / "model-vs-human" / "raw-data"
    for dataset, excluded in human.EXCLUDED_CONDITIONS.items():
        first = sorted((raw / dataset).glob("*.csv"))[0]
        conditions = {human.normalise_condition(row["condition"]) for row in human.read_response_rows(first)}
        assert excluded <= conditions, dataset


def test_vector_1a_mean_not_sum_aggregation():
    probabilities = torch.zeros(1000)
    probabilities[404], probabilities[281], probabilities[282], probabilities[152], probabilities[0] = 0.3, 0.2, 0.2, 0.25, 0.05
    logits = probabilities.log()[None]  # softmax(log p) = p
    scores = dict(zip(human.CATEGORIES, human.sixteen_class_scores(logits)[0].tolist()))
    assert scores["airplane"] == pytest.approx(0.3, abs=1e-6)
    assert scores["cat"] == pytest.approx(0.4 / 6, abs=1e-6)
    assert scores["dog"] == pytest.approx(0.25 / 109, abs=1e-6)
    assert human.sixteen_class_decisions(logits) == ["airplane"]  # summing would have said "cat"


def _session(truth: list[str], responses: list[str], condition: str = "0") -> human.Session:
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
    (scores,) = human.compare_sessions(_session(TRUTH, a), _session(TRUTH, b)).values()
    got = (scores.accuracy_a, scores.accuracy_b, scores.expected_consistency, scores.observed_consistency,
           scores.error_consistency, scores.accuracy_difference, scores.kappa_max,
           scores.error_consistency_ceiled_accuracy_bound)
    assert got == pytest.approx(expected, abs=1e-6)


def test_vector_1b_both_ceiled_forms():
    result = human.score_dataset(_session(TRUTH, MODEL), {"h1": _session(TRUTH, H1), "h2": _session(TRUTH, H2)}, "made-up")
    assert result["mean"]["error_consistency"] == pytest.approx(0.219368, abs=1e-6)
    assert result["human_noise_ceiling_kappa"] == pytest.approx(0.736842, abs=1e-6)
    assert result["error_consistency_ceiled_noise"] == pytest.approx(0.297713, abs=1e-6)
    assert result["mean"]["error_consistency_ceiled_accuracy_bound"] == pytest.approx((0.444444 + 0.166667) / 2, abs=1e-6)
    assert result["humans"]["error_consistency"] == pytest.approx(0.736842, abs=1e-6)
    assert result["humans"]["accuracy"] == pytest.approx((0.7 + 0.8) / 2)  # both subjects, not h1 alone


def test_kappa_is_one_when_decision_makers_agree_completely():
    scores = human.compare(np.ones(5, bool), np.ones(5, bool))
    assert scores.error_consistency == 1.0 and scores.observed_consistency == 1.0


def test_vector_1c_aggregation_order():
    tree = {"D1": {"s1": {"a": 0.2, "b": 0.4}, "s2": {"a": 0.1, "b": 0.3}}, "D2": {"s1": {"-": 0.5}}}
    assert human.nested_mean(tree) == pytest.approx(0.375)  # a flat mean would be 0.3


def test_excluded_conditions_are_dropped_before_averaging():
    model = {**_session(["dog"] * 4, ["dog", "dog", "cat", "cat"], "0.6"), **{
        f"x{i}": Trial(f"x{i}", "dog", r, "0.1") for i, r in enumerate(["dog", "cat", "dog", "cat"])}}
    person = {k: Trial(v.image_id, v.category, "dog", v.condition) for k, v in model.items()}
    scores = human.compare_sessions(model, person, human.EXCLUDED_CONDITIONS["uniform-noise"])
    assert list(scores) == ["0.1"]


def test_image_names_and_conditions_read_like_the_benchmark():
    assert human.short_image_name("0001_edg_s01_0_oven_00_oven10.png") == "oven10.png"
    assert human.short_image_name("0001_lp_s01_40_chair_10_n04099969_7577.png") == "n04099969_7577.png"
    assert human.short_image_name("airplane1-bicycle2.png") == "airplane1-bicycle2.png"
    assert [human.normalise_condition(c) for c in ["0.60", "0.00", "40", "c01", "true"]] == ["0.6", "0.0", "40", "c01", "True"]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_shape_bias_on_made_up_cue_conflict_responses():
    rows = [("bird3-clock2.png", "bird", "bird"),  # shape
            ("car1-boat2.png", "car", "car"),  # shape
            ("dog1-cat2.png", "dog", "cat"),  # texture
            ("knife1-oven2.png", "knife", "truck"),  # neither
            ("bird1-bird2.png", "bird", "bird")]  # same class in shape and texture: dropped
    session = {name: Trial(name, category, response, "0") for name, category, response in rows}
    bias = human.shape_bias(session)
    assert bias["trials"] == 4
    assert (bias["shape_fraction"], bias["texture_fraction"]) == (0.5, 0.25)
    assert bias["shape_bias"] == pytest.approx(2 / 3)


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
    result = human.score_responses_file(files[0], folder)
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

    from_root = human.score_responses_file(files[0], folder.parent)  # the raw-data root: matched by image name
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
    rows = human.read_response_rows(sorted(folder.glob("*.csv"))[0])
    path = _write_csv(tmp_path / "model.csv", [{**row, "subj": "my-model", "object_response": "dog"} for row in rows])
    result = human.score_responses_file(path, folder)
    assert result["responses"]["decision_maker"] == "my-model" and result["responses"]["excluded_subject"] is None
    assert len(result["datasets"]["edge"]["subjects"]) == 10
    assert result["overall"]["accuracy"] == pytest.approx(10 / 160)  # 10 dog drawings


def test_bad_inputs_are_clear_errors(shared_data, tmp_path, capsys):
    from vito.cli import main

    raw = shared_data / "model-vs-human" / "raw-data" / "edge"
    with pytest.raises(human.DataError, match="not found"):
        human.score_responses_file(tmp_path / "missing.csv", raw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(human.DataError, match="no human response CSVs"):
        human.load_human_data(tmp_path / "empty")
    assert main(["eval", "model-vs-human", "--humans", "--raw-data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "raw-data folder not found" in capsys.readouterr().err
    assert main(["eval", "model-vs-human", "--out", str(tmp_path)]) == 2  # nothing to score


def test_consistency_table_of_several_results(shared_data, tmp_path):
    folder = shared_data / "model-vs-human" / "raw-data" / "edge"
    files = sorted(folder.glob("*.csv"))
    from vito.cli import main

    for path in files[:2]:
        assert main(["eval", "model-vs-human", "--responses", str(path), "--raw-data", str(folder),
                     "--out", str(tmp_path / path.stem)]) == 0
    assert main(["eval", "model-vs-human", "--out", str(tmp_path / "table"),
                 "--compare", *[str(tmp_path / p.stem) for p in files[:2]]]) == 0
    table = (tmp_path / "table" / "result.md").read_text()
    assert "| subject-01 (edge) |" in table and "| subject-02 (edge) |" in table
    assert "| humans, subject pairs (edge) |" in table
    assert (tmp_path / "table" / "model_vs_human.png").stat().st_size > 1000


def test_responses_are_matched_to_datasets_by_image_name(shared_data, tmp_path):
    raw = shared_data / "model-vs-human" / "raw-data"
    humans = {name: human.load_human_data(raw / name)[name] for name in ("edge", "cue-conflict")}
    rows = [{"imagename": "oven10.png", "object_response": "oven", "category": "oven", "condition": "0"},
            {"imagename": "bird2-clock3.png", "object_response": "clock", "category": "bird", "condition": "0"},
            {"imagename": "nothing.png", "object_response": "oven", "category": "oven", "condition": "0"}]
    sessions, unmatched = human.assign_to_datasets(rows, humans)
    assert unmatched == 1
    assert list(sessions["edge"]) == ["oven10.png"] and list(sessions["cue-conflict"]) == ["bird2-clock3.png"]


def test_missing_columns_are_a_user_error(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [{"imagename": "oven10.png", "response": "oven"}])
    with pytest.raises(human.DataError, match="object_response"):
        human.read_response_rows(path)


@pytest.mark.slow
def test_random_model_end_to_end_on_real_stimuli(shared_data, tmp_path):
    """A random-init ResNet-18 with a random linear head, through the CLI, on the real edge + cue-conflict
    stimuli: it must run, match every stimulus to its human trials, and score near chance."""
    import json

    from torch import nn

    from vito.cli import main
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
