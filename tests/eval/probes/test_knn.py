"""`vito eval knn`: the kNN probe reports several k."""

from __future__ import annotations

from tests.eval.probes.helpers import image_folder
from vito.cli import main
from vito.eval.core.result import read_result


def test_knn_reports_several_k(shared_data, tmp_path) -> None:
    data = image_folder(tmp_path / "data", shared_data)
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train",
                 str(data), "--val", str(data), "--image-size", "32", "--num-workers", "0",
                 "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert [row["k"] for row in result.tables["accuracy per k"]] == [10, 20, 100, 200]
    assert {"top1_k10", "top1_k20", "top1_k100", "top1_k200"} <= set(result.metrics)
    assert result.metrics["top1"].label == "top-1 (k=20)"
