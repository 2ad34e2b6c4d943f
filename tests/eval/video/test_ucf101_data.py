"""UCF-101's data: official split files (a malformed one is a one-line DataError), clips that cover a video,
real clips decoded into 24-frame clips with the evaluation view, missing or unreadable videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.eval.video.ucf101_toy import two_classes_of_one_clip
from vito.errors import DataError
from vito.eval.video import ucf101_data
from vito.eval.video.ucf101_data import (
    TrainingClips,
    UCF101Clips,
    VideoEntry,
    clip_frame_times,
    evaluation_clip_starts,
    read_class_names,
    read_split,
)


@pytest.mark.parametrize(("class_index", "message"), [
    (b"\xff1 A\n", "class index .* is not a readable UTF-8 text file"),
    (b"1 A B\n", "line 1: '1 A B' is not"),
    (b"x A\n", "line 1: 'x A' is not"),
    (b"1 A\n1 B\n", "line 2: '1 B' is not .* a new id"),
    (b"1 A\n3 B\n", "must be 1..N without gaps"),
])
def test_ucf101_malformed_class_index_is_a_data_error(tmp_path: Path, class_index: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_bytes(class_index)
    with pytest.raises(DataError, match=message):
        ucf101_data.read_class_names(tmp_path)


@pytest.mark.parametrize(("split_list", "message"), [
    (b"A/v_A_g01_c01.avi one\n", "line 1: 'A/v_A_g01_c01.avi one' is not"),
    (b"A/v_\xff.avi 1\n", "split file .* is not a readable UTF-8 text file"),
    (b"A/v_A_g01_c01.avi 1\nA/v_A_g01_c01.avi 1\n", "line 2: A/v_A_g01_c01.avi is listed more than once"),
    (b"\r\n\n", "trainlist01.txt lists no videos"),
    (b"A/../../../etc/passwd 1\n", "line 1: 'A/../../../etc/passwd' is not a relative path inside the dataset"),
    (b"/A/v_A_g01_c01.avi\n", "line 1: '/A/v_A_g01_c01.avi' is not a relative path"),
])
def test_ucf101_malformed_split_list_is_a_data_error(tmp_path: Path, split_list: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n")
    (tmp_path / "trainlist01.txt").write_bytes(split_list)
    with pytest.raises(DataError, match=message):
        ucf101_data.read_split(tmp_path, 1, "train")


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
    from vito.eval.video.ucf101 import UCF101, UCF101Settings, read_split_inputs

    splits = shared_data / "ucf101" / "ucfTrainTestlist"
    with pytest.raises(DataError, match="video folder not found"):
        read_split_inputs(UCF101Settings(root=tmp_path / "nope", splits=splits), 1)
    settings = UCF101Settings(root=tmp_path, splits=splits, epochs=3, num_workers=0, max_videos=3)
    with pytest.raises(DataError, match="split 1: no training video could be read"):  # at once, not after 16 epochs
        read_split_inputs(settings, 1)
    with pytest.raises(DataError, match="split 1: no training video could be read"):  # what the evaluation runs first
        UCF101().run(load_encoder("timm:resnet18"), settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_split_is_checked_before_the_first_one_trains(tmp_path, shared_data) -> None:
    """--split 1 2: split 2's test videos are absent, so nothing trains (split 1 would have, for a minute)."""
    from vito.errors import DataError
    from vito.eval.video.ucf101 import UCF101, UCF101Settings

    splits = two_classes_of_one_clip(tmp_path, shared_data)
    (splits / "trainlist02.txt").write_text((splits / "trainlist01.txt").read_text())
    (splits / "testlist02.txt").write_text("Archery/v_Archery_g07_c01.avi\r\n")
    settings = UCF101Settings(root=tmp_path / "videos", splits=splits, split=[1, 2], num_workers=0)
    with pytest.raises(DataError, match="UCF-101 split 2: no testing video could be read"):
        UCF101().run(object(), settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _NumberedClips(UCF101Clips):
    """Training videos that decode to their own (video, draw) numbers: what TrainingClips picked, without video."""

    def read(self, index: int, draw: int) -> torch.Tensor:
        return torch.tensor([[index, draw]])


def test_every_epoch_takes_clips_per_video_fresh_clips_of_every_video() -> None:
    """3 videos x 5 clips per epoch (the CycleContrast recipe) at batch 5: an epoch is 3 steps, each video appears
    5 times in it, with draws 0-4 in epoch 0 and 5-9 in epoch 1; `first` continues another phase's stream."""
    videos = _NumberedClips("root", [VideoEntry(f"v{i}.avi", i) for i in range(3)], train=True)
    stream = TrainingClips(videos, batch_size=5, seed=0, start_step=0, clips_per_video=5)
    drawn = [tuple(row) for step in range(6) for row in stream.batch(step)["clips"].tolist()]
    for epoch in (0, 1):
        picks = drawn[15 * epoch: 15 * (epoch + 1)]
        for video in range(3):
            assert sorted(d for v, d in picks if v == video) == list(range(5 * epoch, 5 * epoch + 5))
    assert drawn[:15] != sorted(drawn[:15])  # shuffled within the epoch
    later = TrainingClips(videos, batch_size=5, seed=0, start_step=0, clips_per_video=5, first=15)
    assert torch.equal(later.batch(0)["clips"], stream.batch(3)["clips"])
    one = TrainingClips(videos, batch_size=3, seed=0, start_step=0)  # vito-v1: one clip, draw = epoch
    assert sorted(tuple(r) for r in one.batch(1)["clips"].tolist()) == [(0, 1), (1, 1), (2, 1)]


def test_colour_jitter_is_one_draw_for_the_whole_clip() -> None:
    """Brightness alone (strength 0.4): every frame of the clip is scaled by the same factor from U[0.6, 1.4]."""
    clip = torch.full((3, 3, 4, 4), 100, dtype=torch.uint8)
    clip[1] = 50
    factor = np.random.default_rng(7).uniform(0.6, 1.4)
    out = ucf101_data.jitter_colours(clip, (0.4, 0.0, 0.0, 0.0), np.random.default_rng(7))
    assert out[0].unique().tolist() == out[2].unique().tolist() == [round(100 * factor)]
    assert out[1].unique().tolist() == [round(50 * factor)]
    full = ucf101_data.jitter_colours(torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8).repeat(2, 1, 1, 1),
                                      (0.4, 0.4, 0.4, 0.2), np.random.default_rng(1))
    assert torch.equal(full[0], full[1])  # all four changes, the same for every frame
