"""`vito eval ucf101`: a fine-tune end to end, and several splits reported with their mean and sd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.eval.video.ucf101_toy import two_classes_of_one_clip
from vito.eval.video import ucf101


@pytest.mark.slow
def test_finetune_and_test_end_to_end(tmp_path, shared_data) -> None:
    """Two 'classes' made of the one real clip: the whole pipeline runs and reports, with the default
    (CycleContrast) recipe's classifier warm-up, colour jitter and dropout, one clip per video to stay small."""
    from vito.cli import main
    from vito.eval.core.result import read_result

    splits = two_classes_of_one_clip(tmp_path, shared_data, extra_test_line="Archery/v_missing.avi\r\n")
    out = tmp_path / "out"
    assert main(["eval", "ucf101", "--encoder", "timm:resnet18", "--random-init", "--root", str(tmp_path / "videos"),
                 "--splits", str(splits), "--pooling", "ms-attn", "--epochs", "1", "--batch-size", "2",
                 "--train-clips", "1", "--warmup-epochs", "1", "--num-workers", "0", "--image-size", "32",
                 "--test-clips", "2", "--out", str(out), "--device", "cpu"]) == 0
    report = read_result(out)
    assert report.coverage.used == 2 and [Path(p).name for p, _ in report.skipped] == ["v_missing.avi"]
    assert report.coverage.partial  # 2 of the 3 listed test videos
    assert report.value("top1") == 0.5  # identical videos with different labels: exactly one is right
    assert [(row["phase"], row["epoch"]) for row in report.tables["loss history"]] == \
        [("classifier warm-up", 1), ("fine-tune", 1)]
    assert (out / "classifier_split1.pt").is_file() and (out / "runs" / "split1_warmup" / "config.yaml").is_file()
    assert report.settings["recipe"] == "cyclecontrast" and report.settings["recipe_values"]["dropout"] == 0.9
    assert report.settings["recipe_values"]["color_jitter"] == [0.4, 0.4, 0.4, 0.2]


def test_ucf101_runs_several_splits_and_reports_mean_and_sd(monkeypatch, tmp_path) -> None:
    accuracy = {1: 0.5, 2: 0.7, 3: 0.6}

    def fake(encoder, settings, split, out_dir):
        return {"split": split, "top1": accuracy[split], "top5": 1.0, "train_videos": 4, "test_videos": 2,
                "listed_test_videos": 2, "skipped_videos": {"train": [], "test": []}, "history": [], "seconds": 1.0}

    monkeypatch.setattr(ucf101, "run_ucf101", fake)
    monkeypatch.setattr(ucf101, "read_split_inputs", lambda settings, split: split)  # fake receives the number
    settings = ucf101.UCF101Settings(root=tmp_path, splits=tmp_path, split=[1, 2, 3])
    result = ucf101.UCF101().run(object(), settings, tmp_path)
    assert result.value("top1") == pytest.approx(0.6) and result.value("top1_sd") == pytest.approx(0.1)
    assert [row["split"] for row in result.tables["per split"]] == [1, 2, 3]
