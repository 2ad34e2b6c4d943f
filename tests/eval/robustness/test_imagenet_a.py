"""ImageNet-A: slicing the 1000 logits to its 200 classes (spec vector 5a), its class list, an end-to-end run."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.eval.robustness.helpers import ConstantEncoder, favouring, imagenet_a_folder
from vito.errors import DataError
from vito.eval.core.classifier import ImageNetClassifier, imagenet_synsets
from vito.eval.robustness.imagenet_a import evaluate_imagenet_a, imagenet_a_classes, imagenet_a_predictions


def test_vector_5a_imagenet_a_slicing():
    logits = torch.zeros(1, 1000)
    logits[0, 1], logits[0, 6], logits[0, 11] = 5.0, 3.0, 4.0
    assert logits.argmax().item() == 1  # not an ImageNet-A class
    assert imagenet_a_predictions(logits).tolist() == [1]  # subset position 1 = ImageNet class 11


def test_imagenet_a_class_list_equals_the_shared_table(shared_data):
    indices, wnids = imagenet_a_classes()
    with open(shared_data / "imagenet" / "imagenet_a_classes.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["imagenet_a_index"]) for r in rows] == list(range(200))
    assert [int(r["imagenet_1k_index"]) for r in rows] == indices
    assert [r["wnid"] for r in rows] == wnids
    assert [imagenet_synsets()[i] for i in indices] == wnids


def test_imagenet_a_end_to_end_on_real_images(shared_data, tmp_path):
    indices, _ = imagenet_a_classes()
    imagenet_a_folder(shared_data, tmp_path / "imagenet-a")
    model = ImageNetClassifier(ConstantEncoder(), favouring(indices[1]))
    result = evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert result.used == 3 and result.metrics["top1"] == pytest.approx(1 / 3)
    (tmp_path / "imagenet-a" / "not-a-wnid").mkdir()
    with pytest.raises(DataError, match="not-a-wnid"):
        evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
