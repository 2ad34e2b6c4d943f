"""UCF-101: official split files, clip sampling and decoding, the three temporal integrations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vito.eval.video.ucf101 import (
    ClipSettings,
    TemporalAttention,
    TemporalPooling,
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
    times = clip_frame_times(starts[-1], ClipSettings())
    assert len(times) == 24 and times[-1] == pytest.approx(4.56 + 23 / 12)
    assert evaluation_clip_starts(1.0, 10, 2.0).tolist() == [0.0] * 10  # shorter than a clip


def test_real_clip_decodes_into_24_frame_clips(shared_data) -> None:
    root = shared_data / "ucf101" / "clips"
    settings = ClipSettings(image_size=32, test_clips=3)
    clips, label, _ = UCF101Clips(root, [VideoEntry("test.avi", 0)], train=False, settings=settings)[0]
    assert clips.shape == (3, 24, 3, 32, 32) and label == 0
    assert not torch.equal(clips[0], clips[-1])  # different parts of the video
    train_clip, _, _ = UCF101Clips(root, [VideoEntry("test.avi", 0)], train=True, settings=settings)[0]
    assert train_clip.shape == (1, 24, 3, 32, 32)
    missing, _, path = UCF101Clips(root, [VideoEntry("missing.avi", 0)], train=False, settings=settings)[0]
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


@pytest.mark.slow
def test_finetune_and_test_end_to_end(tmp_path, shared_data) -> None:
    """Two 'classes' made of the one real clip: the whole pipeline runs and reports."""
    from vito.cli import main
    from vito.eval.core.result import read_result

    clip = shared_data / "ucf101" / "clips" / "test.avi"
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n")
    for name in ("ApplyEyeMakeup", "Archery"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        (tmp_path / "videos" / name / f"v_{name}_g01_c01.avi").symlink_to(clip)
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\nArchery/v_Archery_g01_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\nArchery/v_missing.avi\r\n")
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
    from vito.eval.video.ucf101 import transform_clip

    frames = torch.randint(0, 256, (3, 40, 60, 3), dtype=torch.uint8)
    clip = transform_clip(frames, 32, train=False)
    assert clip.shape == (3, 3, 32, 32)
    assert torch.allclose(clip[1], EvalTransform(32)(frames[1].permute(2, 0, 1)), atol=1e-6)


def test_missing_or_unreadable_videos_are_a_clear_error(tmp_path, shared_data) -> None:
    from vito.errors import DataError
    from vito.eval.core.encoders import load_encoder
    from vito.eval.video.ucf101 import FinetuneSettings, run_ucf101

    splits = shared_data / "ucf101" / "ucfTrainTestlist"
    encoder = load_encoder("timm:resnet18")
    with pytest.raises(DataError, match="video folder not found"):
        run_ucf101(encoder, tmp_path / "nope", splits, 1, "avg", tmp_path / "out")
    settings = FinetuneSettings(epochs=3, num_workers=0, max_videos=3)
    with pytest.raises(DataError, match="no training video could be read"):  # at once, not after 16 epochs
        run_ucf101(encoder, tmp_path, splits, 1, "avg", tmp_path / "out", settings)
