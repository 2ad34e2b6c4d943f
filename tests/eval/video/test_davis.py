"""`vito eval davis`: propagate and score a toy sequence through the command line, then score its results again."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.eval.video.davis_toy import tiny_davis


def test_cli_propagates_and_scores_a_toy_sequence(tmp_path) -> None:
    from vito.cli import main
    from vito.eval.core.result import read_result

    tiny_davis(tmp_path / "davis")
    out = tmp_path / "out"
    assert main(["eval", "davis", "--encoder", "timm:resnet18", "--random-init", "--davis-root", str(tmp_path / "davis"),
                 "--out", str(out), "--device", "cpu", "--radius", "6"]) == 0
    report = read_result(out)
    assert {row["object"] for row in report.tables["per object"]} == {"toy_1", "toy_2"}
    assert report.settings["topk"] == 10 and report.settings["stride8"] is True
    prediction = Image.open(out / "results" / "toy" / "00002.png")
    assert prediction.mode == "P" and prediction.size == (96, 64)
    assert report.value("j_mean") > 0.5  # colour blobs are easy even for a random network
    rescored = tmp_path / "rescored"
    assert main(["eval", "davis", "--davis-root", str(tmp_path / "davis"), "--results", str(out / "results"),
                 "--out", str(rescored)]) == 0
    values = {name: metric.value for name, metric in report.metrics.items()}
    assert {name: m.value for name, m in read_result(rescored).metrics.items()} == pytest.approx(values)
    # a picture like the other benchmarks': the scored masks over frames of the first sequence, the truth below
    assert report.pictures == read_result(rescored).pictures == ["masks_toy.png"]
    with Image.open(out / "masks_toy.png") as strip, Image.open(rescored / "masks_toy.png") as again:
        assert strip.height == 2 * 120 + 4 and strip.width > 2 * 180 and strip.tobytes() == again.tobytes()
