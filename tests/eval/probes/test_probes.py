"""kNN and linear probe: the spec's test vector, separable data, random labels, head round trip, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vito.errors import VitoError
from vito.eval.probes.heads import (
    LinearProbeSettings,
    load_linear_head,
    save_linear_head,
    topk_accuracy,
    train_linear_probe,
)
from vito.eval.probes.knn import knn_scores


def test_knn_weighted_vote_matches_spec_vector_9a() -> None:
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    test = torch.tensor([[0.96, 0.28]])
    scores = knn_scores(train, labels, test, num_classes=3, k=3, temperature=0.07)
    assert scores[0].tolist() == pytest.approx([0.552047, 0.447953, 0.0], abs=1e-6)
    assert knn_scores(train, labels, test, num_classes=3, k=3).argmax(dim=1).item() == 0  # majority would say 1


def _clusters(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=generator), labels


def test_knn_separable_is_perfect_and_random_labels_are_chance() -> None:
    train_x, train_y = _clusters(40, 5, 16, seed=0)
    test_x, test_y = _clusters(20, 5, 16, seed=1)
    assert topk_accuracy(knn_scores(train_x, train_y, test_x, 5), test_y)["top1"] == 1.0
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    chance = topk_accuracy(knn_scores(train_x, shuffled, test_x, 5), test_y)["top1"]
    assert chance < 0.45


def test_linear_probe_sweep_separable_and_random() -> None:
    train_x, train_y = _clusters(40, 4, 8, seed=0)
    val_x, val_y = _clusters(20, 4, 8, seed=1)
    settings = LinearProbeSettings(lrs=(0.4, 0.05), epochs=20, probe_batch_size=64)
    result = train_linear_probe(train_x, train_y, val_x, val_y, 4, settings)
    assert set(result.sweep) == {0.4, 0.05}
    assert result.val_metrics["top1"] == 1.0
    assert result.best_lr in (0.4, 0.05)
    random_y = torch.randint(0, 4, train_y.shape, generator=torch.Generator().manual_seed(2))
    random_val_y = torch.randint(0, 4, val_y.shape, generator=torch.Generator().manual_seed(3))
    held = train_linear_probe(train_x, random_y, val_x, random_val_y, 4, LinearProbeSettings(
        lrs=(0.1,), epochs=20, probe_batch_size=64, holdout_fraction=0.25))
    assert held.selection == "holdout"
    assert held.val_metrics["top1"] < 0.5


def test_linear_head_round_trip(tmp_path) -> None:
    head = torch.nn.Linear(6, 3)
    path = tmp_path / "head.pt"
    save_linear_head(path, head, {"classes": ["a", "b", "c"]})
    loaded = load_linear_head(path)
    x = torch.randn(4, 6)
    assert torch.allclose(loaded(x), head(x))
    assert loaded.meta["classes"] == ["a", "b", "c"]
    (tmp_path / "bad.pt").write_bytes(b"not a head")
    with pytest.raises(VitoError):
        load_linear_head(tmp_path / "bad.pt")


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
