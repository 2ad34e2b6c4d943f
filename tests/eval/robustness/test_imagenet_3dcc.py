"""ImageNet-3DCC: Δ-accuracy (spec vector 6a), a made-up layout end to end with its Fig. 2, and partial coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.eval.robustness.helpers import ConstantEncoder, favouring, imagenet_a_folder
from vito.eval.core.classifier import ImageNetClassifier
from vito.eval.core.result_writer import write_result
from vito.eval.robustness.imagenet_3dcc import delta_accuracy, evaluate_3dcc
from vito.eval.robustness.imagenet_a import imagenet_a_classes
from vito.eval.robustness.pictures import plot_3dcc
from vito.eval.robustness.shared import scored_result


def test_vector_6a_delta_accuracy():
    accuracy = {"near_focus": dict(zip(range(1, 6), [0.70, 0.66, 0.62, 0.58, 0.54]))}
    delta = delta_accuracy(0.76, accuracy)
    assert delta["per_corruption"]["near_focus"] == pytest.approx(0.14)
    assert delta["mean"] == pytest.approx(0.14)
    assert delta["per_severity"][5] == pytest.approx(0.22)
    two = delta_accuracy(0.76, {**accuracy, "fog_3d": dict(zip(range(1, 6), [0.76] * 5))})
    assert two["per_severity"][1] == pytest.approx((0.06 + 0.0) / 2) and two["mean"] == pytest.approx(0.07)


def test_3dcc_end_to_end_on_a_made_up_layout(shared_data, tmp_path):
    for corruption in ("near_focus", "fog_3d"):
        for severity in (1, 2):
            imagenet_a_folder(shared_data, tmp_path / "3dcc" / corruption / str(severity), count=2)
    first = imagenet_a_classes()[0][0]
    model = ImageNetClassifier(ConstantEncoder(), favouring(first))
    result = evaluate_3dcc(model, tmp_path / "3dcc", clean=0.9, image_size=32)
    assert result.extra["accuracy"] == {"near_focus": {1: 0.5, 2: 0.5}, "fog_3d": {1: 0.5, 2: 0.5}}
    assert result.metrics["delta_accuracy"] == pytest.approx(0.4)
    assert "view_jitter" in result.extra["missing_corruptions"] and "flash" in result.extra["missing_corruptions"]
    written = scored_result("imagenet-3dcc", result, {}, {})
    written.encoder = {"name": "a"}
    write_result(written, tmp_path / "out")
    figure = plot_3dcc([tmp_path / "out", tmp_path / "out" / "result.json"], tmp_path / "out" / "fig.png")
    assert figure.stat().st_size > 1000


def test_3dcc_with_unreadable_images_in_every_corruption_is_partial(tmp_path: Path) -> None:
    """Coverage counts corruptions: 2 of 2 present read as complete with half the images of each broken."""
    _, wnids = imagenet_a_classes()
    for corruption in ("near_focus", "fog_3d"):
        folder = tmp_path / "3dcc" / corruption / "1" / wnids[0]
        folder.mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(folder / "good.png")
        (folder / "broken.png").write_bytes(b"")
    model = ImageNetClassifier(ConstantEncoder(), favouring(0))
    scored = evaluate_3dcc(model, tmp_path / "3dcc", clean=0.5, corruptions=("near_focus", "fog_3d"),
                           image_size=8)
    assert (scored.used, scored.expected) == (0, 2) and len(scored.skipped) == 2
    assert "corruptions evaluated on every image (2 of 4 images readable)" in scored.note
    (tmp_path / "3dcc" / "fog_3d" / "1" / wnids[0] / "broken.png").unlink()
    assert (evaluate_3dcc(model, tmp_path / "3dcc", clean=0.5, corruptions=("near_focus", "fog_3d"),
                          image_size=8).used) == 1
    missing = evaluate_3dcc(model, tmp_path / "3dcc", clean=0.5, image_size=8,
                            corruptions=("near_focus", "fog_3d", "flash"))
    assert missing.used < missing.expected and "missing: flash" in missing.note
