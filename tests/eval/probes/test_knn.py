"""kNN: the weighted vote by hand, separable vs random labels, `vito eval knn` (and `linear`) from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.eval.probes.helpers import clusters, image_folder
from vito.cli import main
from vito.eval.core.result import read_result
from vito.eval.probes.heads import (
    load_linear_head,
    topk_accuracy,
)
from vito.eval.probes.knn import knn_scores


def test_knn_reports_several_k_and_says_which_were_clipped(shared_data, tmp_path, capsys) -> None:
    data = image_folder(tmp_path / "data", shared_data)  # 4 training images: every k here votes with all 4
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train",
                 str(data), "--val", str(data), "--image-size", "32", "--num-workers", "0",
                 "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert [row["k"] for row in result.tables["accuracy per k"]] == [10, 20, 100, 200]
    assert [row["neighbours used"] for row in result.tables["accuracy per k"]] == [4, 4, 4, 4]
    assert {"top1_k10", "top1_k20", "top1_k100", "top1_k200"} <= set(result.metrics)
    assert result.metrics["top1"].label == "top-1 (k=20, clipped to 4)"
    assert result.settings["k_clipped_to"] == {"10": 4, "20": 4, "100": 4, "200": 4}
    assert "k=10, 20, 100, 200 clipped to the 4 training images" in result.coverage.note
    summary = capsys.readouterr().out.splitlines()[-1]
    page = (tmp_path / "out" / "result.md").read_text()
    assert summary.count("top-1 (k=20, clipped to 4)") == 1 and page.count("| top-1 (k=20, clipped to 4) |") == 1


def test_knn_weighted_vote_matches_spec_vector_9a() -> None:
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    test = torch.tensor([[0.96, 0.28]])
    scores = knn_scores(train, labels, test, num_classes=3, k=3, temperature=0.07)
    assert scores[0].tolist() == pytest.approx([0.552047, 0.447953, 0.0], abs=1e-6)
    assert knn_scores(train, labels, test, num_classes=3, k=3).argmax(dim=1).item() == 0  # majority would say 1


def test_knn_separable_is_perfect_and_random_labels_are_chance() -> None:
    train_x, train_y = clusters(40, 5, 16, seed=0)
    test_x, test_y = clusters(20, 5, 16, seed=1)
    assert topk_accuracy(knn_scores(train_x, train_y, test_x, 5), test_y)["top1"] == 1.0
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    chance = topk_accuracy(knn_scores(train_x, shuffled, test_x, 5), test_y)["top1"]
    assert chance < 0.45


def test_cli_knn_and_linear_write_results(tmp_path) -> None:
    from PIL import Image

    from vito.cli import main
    from vito.eval.core.result import read_result

    for split in ("train", "val"):
        for c, colour in enumerate([(250, 10, 10), (10, 10, 250)]):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (36 + 4 * i, 32), tuple(v // (i + 1) for v in colour)).save(folder / f"{i}.png")
    common = ["--encoder", "timm:resnet18", "--random-init", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
              "--image-size", "32", "--num-workers", "0", "--device", "cpu"]
    assert main(["eval", "knn", *common, "--out", str(tmp_path / "knn"), "--k", "3"]) == 0
    knn = read_result(tmp_path / "knn")
    assert knn.coverage.used == 12 and knn.settings["k"] == [3] and 0 <= knn.value("top1") <= 1
    assert (tmp_path / "knn" / "result.md").read_text().startswith("# knn")
    assert main(["eval", "linear", *common, "--out", str(tmp_path / "lin"), "--lrs", "0.1", "0.05",
                 "--epochs", "2", "--cache-dir", str(tmp_path / "knn" / "features")]) == 0
    linear = read_result(tmp_path / "lin")
    assert {row["base_lr"] for row in linear.tables["lr sweep"]} == {0.1, 0.05}
    assert load_linear_head(tmp_path / "lin" / "linear_head.pt").meta["classes"] == ["class0", "class1"]
    assert not (tmp_path / "lin" / "features").exists()  # the kNN run's cached features were reused


def test_cli_reads_any_image_mode_and_skips_unreadable_files(tmp_path) -> None:
    """Grey, RGBA and palette images are converted; a corrupt file is skipped and listed, not fatal."""
    from PIL import Image

    from vito.cli import main
    from vito.eval.core.result import read_result

    for split in ("train", "val"):
        for c in range(2):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            Image.new("L", (40, 32), 60 + 100 * c).save(folder / "grey.png")
            Image.new("RGBA", (40, 32), (200 * c, 30, 90, 128)).save(folder / "rgba.png")
            Image.new("P", (40, 32), 3 + c).save(folder / "palette.png")
    (tmp_path / "train" / "class0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "knn"
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--train", str(tmp_path / "train"),
                 "--val", str(tmp_path / "val"), "--out", str(out), "--image-size", "32", "--num-workers", "0",
                 "--device", "cpu", "--k", "3"]) == 0
    report = read_result(out)
    assert report.coverage.used == 12 and report.coverage.expected == 13
    assert [Path(p).name for p, _ in report.skipped] == ["corrupt.jpg"]
    assert "Skipped 1 inputs" in (out / "result.md").read_text()


@pytest.mark.parametrize("problem", ["missing", "empty", "no-images"])
def test_cli_names_a_bad_image_folder(tmp_path, capsys, problem: str) -> None:
    from vito.cli import main

    train = tmp_path / "train"
    if problem != "missing":
        train.mkdir()
    if problem == "no-images":
        (train / "class0").mkdir()
        (train / "class0" / "notes.txt").write_text("no image here")
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--train", str(train),
                 "--val", str(train), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert str(train) in error and ("not found" in error or "is not an ImageFolder" in error)
