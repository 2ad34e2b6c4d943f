"""ImageNet-Vid-Robust: superclasses by the max of member logits (4a), pm-k (4b), its metadata, an end-to-end run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.eval.robustness.helpers import ConstantEncoder, favouring
from vito.errors import DataError
from vito.eval.core.classifier import ImageNetClassifier
from vito.eval.robustness.imagenet_vid_robust import (
    VidRobustMetadata,
    evaluate_vid_robust,
    pm_k_accuracy,
    superclass_predictions,
)


def test_vector_4a_superclass_uses_max_of_member_logits(shared_data):
    meta = VidRobustMetadata(shared_data / "imagenet-vid-robust")
    logits = torch.zeros(1, 1000)
    logits[0, 404], logits[0, 207] = 2.0, 3.0
    assert superclass_predictions(logits, meta.members).tolist() == [8]
    assert len(meta.members) == 30 and sum(len(m) for m in meta.members) == 288


def test_vector_4b_pm_k():
    labels = {"a1": [4], "n1": [4], "n2": [4, 8], "a2": [8], "n3": [8], "a3": [27]}
    pmsets = {"a1": ["n1", "n2"], "a2": ["n3"], "a3": []}
    predictions = {"a1": 4, "n1": 4, "n2": 8, "a2": 8, "n3": 11, "a3": 27}
    scores = pm_k_accuracy(predictions, labels, pmsets)
    assert scores["pm0"] == 1.0 and scores["pm10"] == pytest.approx(2 / 3)


def test_pm_k_on_the_real_metadata_with_made_up_predictions(shared_data):
    meta = VidRobustMetadata(shared_data / "imagenet-vid-robust")
    predictions = {frame: classes[0] for frame, classes in meta.labels.items()}
    assert pm_k_accuracy(predictions, meta.labels, meta.pmsets) == {"pm0": 1.0, "pm10": 1.0, "anchors": 1109}
    anchors = sorted(a for a, n in meta.pmsets.items() if n)
    wrong = lambda frame: next(c for c in range(30) if c not in meta.labels[frame])  # noqa: E731
    predictions[meta.pmsets[anchors[0]][0]] = wrong(meta.pmsets[anchors[0]][0])  # a neighbour fails: pm10 only
    predictions[anchors[1]] = wrong(anchors[1])  # an anchor fails: both
    scores = pm_k_accuracy(predictions, meta.labels, meta.pmsets)
    assert scores["pm0"] == pytest.approx(1108 / 1109)
    assert scores["pm10"] == pytest.approx(1107 / 1109)


def test_vid_robust_end_to_end_on_the_real_frames(shared_data):
    turtle = ImageNetClassifier(ConstantEncoder(), favouring(35))  # a turtle class: superclass 26
    result = evaluate_vid_robust(turtle, shared_data / "imagenet-vid-robust", image_size=32, batch_size=21)
    assert result.used == 1 and "21 frames" in result.note and result.expected - result.used == 1108
    assert (result.metrics["pm0"], result.metrics["pm10"]) == (1.0, 1.0)
    dog = ImageNetClassifier(ConstantEncoder(), favouring(207))
    result = evaluate_vid_robust(dog, shared_data / "imagenet-vid-robust", image_size=32, batch_size=21)
    assert (result.metrics["pm0"], result.metrics["pm10"]) == (0.0, 0.0)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("labels.json", "{", "labels.json is not a readable JSON file"),
    ("pmsets.json", "[]", "pmsets.json is not a JSON object"),
    ("rev_class_idx_map.json", '{"0": [1], "2": [3]}', "superclass keys must be 0..N-1"),
    ("labels.json", "{}", "labels.json has no label for 1 frames"),
])
def test_vid_robust_malformed_metadata_is_a_data_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    files = {"labels.json": '{"f/0.jpeg": [1]}', "pmsets.json": '{"f/0.jpeg": []}',
             "rev_class_idx_map.json": '{"0": [1], "1": [2]}'}
    for file, content in {**files, name: text}.items():
        (tmp_path / file).write_text(content)
    with pytest.raises(DataError, match=message):
        VidRobustMetadata(tmp_path)
