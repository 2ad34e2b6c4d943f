"""UCF-101: official split files, clip sampling and decoding, the three temporal integrations, and the fine-tune in
the shared loop (stop and resume, reuse, a non-finite loss, batches by step)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tensors_equal
from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.eval.video import ucf101, ucf101_recipe
from vito.eval.video.temporal_heads import TemporalAttention, TemporalPooling
from vito.eval.video.ucf101_data import (
    TrainingClips,
    UCF101Clips,
    VideoEntry,
    clip_frame_times,
    evaluation_clip_starts,
    read_class_names,
    read_split,
)


def test_official_split_files(shared_data) -> None:
    splits = shared_data / "ucf101" / "ucfTrainTestlist"
    names = read_class_names(splits)
    assert len(names) == 101 and names[0] == "ApplyEyeMakeup"
    train, test = read_split(splits, 1, "train"), read_split(splits, 1, "test")
    assert (len(train), len(test)) == (9537, 3783)
    handstand = names.index("HandstandPushups")
    quirky = [e for e in test if "HandStandPushups" in e.path]
    assert quirky and all(e.label == handstand for e in quirky)
    assert all(e.label == handstand for e in train if "HandStandPushups" in e.path)
    assert not any("\r" in e.path for e in train + test)
    assert {int(e.path.split("_g")[1][:2]) for e in test} == set(range(1, 8))


def test_test_clips_cover_the_video() -> None:
    starts = evaluation_clip_starts(6.56, 10, 2.0)
    assert len(starts) == 10 and starts[0] == 0.0 and starts[-1] == pytest.approx(4.56)
    assert np.allclose(np.diff(starts), 4.56 / 9)
    times = clip_frame_times(starts[-1])
    assert len(times) == 24 and times[-1] == pytest.approx(4.56 + 23 / 12)
    assert evaluation_clip_starts(1.0, 10, 2.0).tolist() == [0.0] * 10  # shorter than a clip


def test_real_clip_decodes_into_24_frame_clips(shared_data) -> None:
    root = shared_data / "ucf101" / "clips"
    settings = {"image_size": 32, "test_clips": 3}
    clips, label, _ = UCF101Clips(root, [VideoEntry("test.avi", 0)], train=False, **settings)[0]
    assert clips.shape == (3, 24, 3, 32, 32) and label == 0
    assert not torch.equal(clips[0], clips[-1])  # different parts of the video
    train_clip, _, _ = UCF101Clips(root, [VideoEntry("test.avi", 0)], train=True, **settings)[0]
    assert train_clip.shape == (1, 24, 3, 32, 32)
    missing, _, path = UCF101Clips(root, [VideoEntry("missing.avi", 0)], train=False, **settings)[0]
    assert missing is None and path.endswith("missing.avi")


def test_attention_spec_vector_8a_softmax_form() -> None:
    attention = TemporalAttention(2, form="softmax", hidden=2)
    with torch.no_grad():
        attention.proj.weight.copy_(torch.eye(2))
        attention.score.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert attention.weights(x)[0].tolist() == pytest.approx([0.593494, 0.129391, 0.277115], abs=1e-6)
    assert attention(x)[0].tolist() == pytest.approx([0.870609, 0.406506], abs=1e-6)


def test_attention_paper_tanh_form() -> None:
    attention = TemporalAttention(2, form="paper")
    with torch.no_grad():
        attention.proj.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    w = np.tanh([1.0, -1.0, 0.0])  # tanh(W z_t), no softmax
    assert attention(x)[0].tolist() == pytest.approx([w[0] + w[2], w[1] + w[2]], abs=1e-6)


def test_pooling_heads_by_hand() -> None:
    t = torch.arange(4, dtype=torch.float32)
    res4 = torch.stack([t, 10 * t], dim=1)[None]  # [1, T=4, C4=2]
    res5 = torch.stack([t, -t, 2 * t], dim=1)[None]  # [1, 4, C5=3]
    assert TemporalPooling("avg", 2, 3)([res4, res5])[0].tolist() == [1.5, -1.5, 3.0]
    ms = TemporalPooling("ms-avg", 2, 3)
    assert ms.out_dim == 7
    assert ms([res4, res5])[0].tolist() == [0.5, 5.0, 2.5, 25.0, 1.5, -1.5, 3.0]
    attn = TemporalPooling("ms-attn", 2, 3)
    with torch.no_grad():
        attn.attend4.proj.weight.copy_(torch.tensor([[1.0, 0.0]]))
        attn.attend5.proj.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
    out = attn([res4, res5])[0]
    w4 = np.tanh([0.0, 1.0, 2.0, 3.0])
    w5 = np.tanh(2 * np.arange(4.0))
    expected = [w4[1] * 1, w4[1] * 10, w4[2] * 2 + w4[3] * 3, 10 * (w4[2] * 2 + w4[3] * 3),
                (w5 * np.arange(4)).sum(), -(w5 * np.arange(4)).sum(), 2 * (w5 * np.arange(4)).sum()]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)


def _two_classes_of_one_clip(tmp_path: Path, shared_data: Path, extra_test_line: str = "") -> Path:
    """UCF-101 in TMP/videos with two classes of one video each, both the one real clip; the split files (CRLF, as
    the official ones) in the returned folder, listing both videos for training and testing."""
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n")
    for name in ("ApplyEyeMakeup", "Archery"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        (tmp_path / "videos" / name / f"v_{name}_g01_c01.avi").symlink_to(shared_data / "ucf101" / "clips" / "test.avi")
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\nArchery/v_Archery_g01_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n" + extra_test_line)
    return splits


def _two_classes(tmp_path: Path, shared_data: Path) -> list[str]:
    """`vito eval ucf101` arguments (all but --out) for the two classes: 3 tiny steps of the temporal head and
    classifier (frozen: the fine-tune's whole-model steps are tested with segmentation's)."""
    splits = _two_classes_of_one_clip(tmp_path, shared_data)
    return ["eval", "ucf101", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--root",
            str(tmp_path / "videos"), "--splits", str(splits), "--epochs", "3", "--batch-size", "2", "--num-workers",
            "0", "--image-size", "16", "--test-clips", "1", "--mode", "frozen"]


@pytest.mark.slow
def test_finetune_and_test_end_to_end(tmp_path, shared_data) -> None:
    """Two 'classes' made of the one real clip: the whole pipeline runs and reports."""
    from vito.cli import main
    from vito.eval.core.result import read_result

    splits = _two_classes_of_one_clip(tmp_path, shared_data, extra_test_line="Archery/v_missing.avi\r\n")
    out = tmp_path / "out"
    assert main(["eval", "ucf101", "--encoder", "timm:resnet18", "--random-init", "--root", str(tmp_path / "videos"),
                 "--splits", str(splits), "--pooling", "ms-attn", "--epochs", "1", "--batch-size", "2",
                 "--num-workers", "0", "--image-size", "32", "--test-clips", "2", "--out", str(out),
                 "--device", "cpu"]) == 0
    report = read_result(out)
    assert report.coverage.used == 2 and [Path(p).name for p, _ in report.skipped] == ["v_missing.avi"]
    assert report.coverage.partial  # 2 of the 3 listed test videos
    assert report.value("top1") == 0.5  # identical videos with different labels: exactly one is right
    assert len(report.tables["loss history"]) == 1 and (out / "classifier_split1.pt").is_file()


def test_test_clips_get_the_imagenet_evaluation_view() -> None:
    from vito.eval.core.inputs import EvalTransform
    from vito.eval.video.ucf101_data import transform_clip

    frames = torch.randint(0, 256, (3, 40, 60, 3), dtype=torch.uint8)
    clip = transform_clip(frames, 32, train=False)
    assert clip.shape == (3, 3, 32, 32)
    assert torch.allclose(clip[1], EvalTransform(32)(frames[1].permute(2, 0, 1)), atol=1e-6)


def test_missing_or_unreadable_videos_are_a_clear_error(tmp_path, shared_data) -> None:
    from vito.errors import DataError
    from vito.eval.core.encoders import load_encoder
    from vito.eval.video.ucf101 import UCF101Settings, run_ucf101

    splits = shared_data / "ucf101" / "ucfTrainTestlist"
    encoder = load_encoder("timm:resnet18")
    with pytest.raises(DataError, match="video folder not found"):
        run_ucf101(encoder, UCF101Settings(root=tmp_path / "nope", splits=splits), 1, tmp_path / "out")
    settings = UCF101Settings(root=tmp_path, splits=splits, epochs=3, num_workers=0, max_videos=3)
    with pytest.raises(DataError, match="no training video could be read"):  # at once, not after 16 epochs
        run_ucf101(encoder, settings, 1, tmp_path / "out")


def test_a_stopped_fine_tune_resumes_as_if_never_stopped_and_a_finished_one_is_reused(tmp_path, shared_data,
                                                                                     monkeypatch) -> None:
    """A stop request during step 2 (as SLURM's SIGTERM): the step and a checkpoint are finished, the command
    exits 143, and --resume ends with the weights, optimizer and RNG states and the scores of a run never stopped.
    A rerun into a finished OUT trains nothing."""
    from vito.cli import main

    args, whole, stopped = _two_classes(tmp_path, shared_data), tmp_path / "whole", tmp_path / "stopped"
    assert main([*args, "--out", str(whole)]) == 0
    loss, calls = ucf101_recipe.clip_loss, []

    def stop_in_step_2(model, batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(model, batch)

    monkeypatch.setattr(ucf101_recipe, "clip_loss", stop_in_step_2)
    assert main([*args, "--out", str(stopped)]) == 143
    assert load_checkpoint(stopped / "runs" / "split1", expected_format="vito-ucf101/1")["step"] == 2
    assert not (stopped / "result.json").exists()
    monkeypatch.setattr(ucf101_recipe, "clip_loss", loss)
    assert main([*args, "--out", str(stopped), "--resume"]) == 0

    final = [torch.load(out / "runs" / "split1" / "checkpoints" / "last.pt", weights_only=True) for out in (whole,
                                                                                                             stopped)]
    assert final[0]["step"] == final[1]["step"] == 3
    for part in ("model", "optimizer", "rng"):
        tensors_equal(final[0][part], final[1][part], part)
    results = [json.loads((out / "result.json").read_text()) for out in (whole, stopped)]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["tables"]["loss history"] == results[1]["tables"]["loss history"] and \
        [row["epoch"] for row in results[0]["tables"]["loss history"]] == [1, 2, 3]

    monkeypatch.setattr(ucf101_recipe, "clip_loss", lambda *a: pytest.fail("a finished fine-tune is trained again"))
    assert main([*args, "--out", str(whole)]) == 0
    assert json.loads((whole / "result.json").read_text())["metrics"] == results[0]["metrics"]


def test_a_non_finite_loss_stops_the_fine_tune_with_one_line(tmp_path, shared_data, monkeypatch, capsys) -> None:
    from vito.cli import main

    loss = ucf101_recipe.clip_loss
    monkeypatch.setattr(ucf101_recipe, "clip_loss", lambda model, batch: {"loss": loss(model, batch)["loss"] * np.nan})
    assert main([*_two_classes(tmp_path, shared_data), "--out", str(tmp_path / "out")]) == 2
    assert "the loss became nan at step 1: training stopped and no checkpoint was written yet. Lower the learning " \
           "rate" in capsys.readouterr().err
    assert not (tmp_path / "out" / "result.json").exists()


def test_training_batches_split_over_processes_and_resume_at_any_step(shared_data) -> None:
    videos = UCF101Clips(shared_data / "ucf101" / "clips", [VideoEntry("test.avi", 0), VideoEntry("missing.avi", 1),
                                                            VideoEntry("test.avi", 2)], train=True, image_size=16)
    whole = TrainingClips(videos, batch_size=2, seed=3, start_step=0)
    first, second = whole.batch(0), whole.batch(1)
    halves = [TrainingClips(videos, 2, seed=3, start_step=1, rank=rank, world_size=2).batch(1) for rank in (0, 1)]
    assert torch.equal(torch.cat([h["clips"] for h in halves]), second["clips"])
    assert torch.equal(torch.cat([h["labels"] for h in halves]), second["labels"])
    assert next(iter(TrainingClips(videos, 2, seed=3, start_step=1)))["step"] == 1
    skipped = first["skipped"] + second["skipped"]  # the missing video is replaced, and listed once
    assert 1 not in first["labels"].tolist() + second["labels"].tolist()
    assert [Path(path).name for path, _ in skipped] == ["missing.avi"]
    with pytest.raises(VitoError, match="does not split over 3 processes"):
        TrainingClips(videos, 2, seed=3, start_step=0, world_size=3)


def test_ucf101_runs_several_splits_and_reports_mean_and_sd(monkeypatch, tmp_path) -> None:
    accuracy = {1: 0.5, 2: 0.7, 3: 0.6}

    def fake(encoder, settings, split, out_dir):
        return {"split": split, "top1": accuracy[split], "top5": 1.0, "train_videos": 4, "test_videos": 2,
                "listed_test_videos": 2, "skipped_videos": {"train": [], "test": []}, "history": [], "seconds": 1.0}

    monkeypatch.setattr(ucf101, "run_ucf101", fake)
    settings = ucf101.UCF101Settings(root=tmp_path, splits=tmp_path, split=[1, 2, 3])
    result = ucf101.UCF101().run(object(), settings, tmp_path)
    assert result.value("top1") == pytest.approx(0.6) and result.value("top1_sd") == pytest.approx(0.1)
    assert [row["split"] for row in result.tables["per split"]] == [1, 2, 3]
