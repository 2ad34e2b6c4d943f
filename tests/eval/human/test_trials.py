"""Model-vs-human's data: the 16 categories against the spec, conditions and image names as the benchmark writes
them, and response CSVs that are not what they should be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.eval.human.helpers import write_csv
from vito.errors import DataError
from vito.eval.human.trials import (
    CATEGORIES,
    CATEGORY_INDICES,
    EXCLUDED_CONDITIONS,
    assign_to_datasets,
    load_human_data,
    normalise_condition,
    read_response_rows,
    short_image_name,
    sixteen_class_decisions,
    sixteen_class_scores,
    trial_from_row,
)


def test_category_lists_match_the_spec_table():
    sizes = {name: len(members) for name, members in CATEGORY_INDICES.items()}
    assert sizes == {"airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7, "car": 3, "cat": 6,
                     "chair": 4, "clock": 3, "dog": 109, "elephant": 2, "keyboard": 2, "knife": 1, "oven": 1, "truck": 8}
    everything = [i for members in CATEGORY_INDICES.values() for i in members]
    assert len(set(everything)) == 207
    assert list(CATEGORIES) == sorted(CATEGORIES)


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
    assert {name: _expand(text) for name, text in SPEC_INDICES.items()} == CATEGORY_INDICES


def test_excluded_conditions_are_spelled_like_the_real_raw_data(shared_data):
    """A condition excluded under a spelling the data never uses (e.g. "0.60" vs "0.6") would silently count."""
    raw = shared_data / "model-vs-human" / "raw-data"
    for dataset, excluded in EXCLUDED_CONDITIONS.items():
        first = sorted((raw / dataset).glob("*.csv"))[0]
        conditions = {normalise_condition(row["condition"]) for row in read_response_rows(first)}
        assert excluded <= conditions, dataset


def test_vector_1a_mean_not_sum_aggregation():
    probabilities = torch.zeros(1000)
    probabilities[404], probabilities[281], probabilities[282], probabilities[152], probabilities[0] = 0.3, 0.2, 0.2, 0.25, 0.05
    logits = probabilities.log()[None]  # softmax(log p) = p
    scores = dict(zip(CATEGORIES, sixteen_class_scores(logits)[0].tolist()))
    assert scores["airplane"] == pytest.approx(0.3, abs=1e-6)
    assert scores["cat"] == pytest.approx(0.4 / 6, abs=1e-6)
    assert scores["dog"] == pytest.approx(0.25 / 109, abs=1e-6)
    assert sixteen_class_decisions(logits) == ["airplane"]  # summing would have said "cat"


def test_image_names_and_conditions_read_like_the_benchmark():
    assert short_image_name("0001_edg_s01_0_oven_00_oven10.png") == "oven10.png"
    assert short_image_name("0001_lp_s01_40_chair_10_n04099969_7577.png") == "n04099969_7577.png"
    assert short_image_name("airplane1-bicycle2.png") == "airplane1-bicycle2.png"
    assert [normalise_condition(c) for c in ["0.60", "0.00", "40", "c01", "true"]] == ["0.6", "0.0", "40", "c01", "True"]


def test_responses_are_matched_to_datasets_by_image_name(shared_data, tmp_path):
    raw = shared_data / "model-vs-human" / "raw-data"
    humans = {name: load_human_data(raw / name)[name] for name in ("edge", "cue-conflict")}
    rows = [{"imagename": "oven10.png", "object_response": "oven", "category": "oven", "condition": "0"},
            {"imagename": "bird2-clock3.png", "object_response": "clock", "category": "bird", "condition": "0"},
            {"imagename": "nothing.png", "object_response": "oven", "category": "oven", "condition": "0"}]
    sessions, unmatched = assign_to_datasets(rows, humans)
    assert unmatched == 1
    assert list(sessions["edge"]) == ["oven10.png"] and list(sessions["cue-conflict"]) == ["bird2-clock3.png"]


def test_missing_columns_are_a_user_error(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [{"imagename": "oven10.png", "response": "oven"}])
    with pytest.raises(DataError, match="object_response"):
        read_response_rows(path)


def test_human_responses_file_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "edge"
    folder.mkdir()
    (folder / "subject-01.csv").write_bytes(b"\xff\xfeimagename,object_response,category,condition\n")
    with pytest.raises(DataError, match="responses file .*subject-01.csv is not a readable UTF-8 text file"):
        load_human_data(folder)


def test_an_image_name_that_leaves_the_stimulus_folder_is_refused(tmp_path: Path) -> None:
    rows = [{"subj": "s1", "imagename": "..", "object_response": "cat", "category": "cat", "condition": "0"}]
    with pytest.raises(DataError, match="column imagename: '..' is not a plain name"):
        [trial_from_row(row) for row in read_response_rows(write_csv(tmp_path / "r.csv", rows))]
