"""Duration and classifier filters, on the real shared videos and on videos whose content we control."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.curate.conftest import BLUE_CLASS, GREEN_CLASS, RED_CLASS, write_colour_video
from vito.curate.filters import FrameClassifier, FramePredictions, Preprocess, long_enough, verify
from vito.curate.lexicon import imagenet_lexicon
from vito.curate.pipeline import Candidate, CurationSettings, Plan, judge
from vito.data.video import probe_video

# The shared clips that reach 10 s (README: 02_cups 10.01 s, 05_default_juggle 10.29 s, cockatoo 14 s and
# mmaction2's demo.mp4 / test.mp4 at exactly 10.00 s); 01_dog (9.64 s) and 03_blocks (9.74 s) do not.
SMALL = Preprocess(crop=32)  # the mean-colour classifier needs no large input
LONG_ENOUGH = {"02_cups.mp4", "05_default_juggle.mp4", "cockatoo.mp4", "demo.mp4", "test.mp4"}


def test_duration_filter_on_the_shared_videos(shared_videos):
    videos = sorted(p for p in shared_videos.rglob("*") if p.is_file())
    assert len(videos) == 12
    kept = {p.name for p in videos if long_enough(probe_video(p).duration, 10.0)}
    assert kept == LONG_ENOUGH


def test_duration_threshold_is_exact_up_to_rounding():
    assert long_enough(10.0, 10.0) and long_enough(10.0 - 1e-9, 10.0)
    assert not long_enough(9.99, 10.0)
    assert long_enough(5.0, 5.0) and not long_enough(4.9, 5.0)  # configurable


def _judge(path: Path, title_class: int, classifier, duration=None, max_frames=100):
    candidate = Candidate(0, "v", str(path), "title", duration)
    plan = Plan([title_class], [title_class], None)
    return judge(candidate, plan, classifier, CurationSettings(max_frames=max_frames, batch_size=4), imagenet_lexicon())


@pytest.mark.parametrize("content", [b"", b"this is not a video at all"])
def test_unreadable_files_are_rejected_as_unreadable(tmp_path, content, colour_net):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    record = _judge(path, RED_CLASS, FrameClassifier(colour_net, preprocess=SMALL))
    assert (record["decision"], record["reason"]) == ("rejected", "unreadable")
    assert "broken.mp4" in record["error"]
    missing = _judge(tmp_path / "missing.mp4", RED_CLASS, FrameClassifier(colour_net, preprocess=SMALL))
    assert missing["reason"] == "unreadable"
    # With a trusted duration the file is only opened by the classifier, which must also report unreadable.
    assert _judge(path, RED_CLASS, FrameClassifier(colour_net, preprocess=SMALL), duration=30.0)["reason"] == "unreadable"


def test_classifier_keeps_exactly_the_videos_showing_the_query_class(tmp_path, colour_net):
    classifier = FrameClassifier(colour_net, batch_size=4, preprocess=SMALL)
    red = write_colour_video(tmp_path / "red.mp4", ["red"] * 110)
    mixed = write_colour_video(tmp_path / "mixed.mp4", ["green"] * 60 + ["blue"] * 3 + ["green"] * 47)
    late = write_colour_video(tmp_path / "late.mp4", ["green"] * 100 + ["red"] * 20)  # red only after frame 100
    cases = [
        (red, RED_CLASS, "kept"),
        (red, GREEN_CLASS, "classifier_miss"),
        (mixed, BLUE_CLASS, "kept"),  # three frames are enough: "top-1 for any of the frames"
        (mixed, GREEN_CLASS, "kept"),
        (late, RED_CLASS, "classifier_miss"),  # only the first 100 frames count
        (late, GREEN_CLASS, "kept"),
    ]
    for path, query, reason in cases:
        record = _judge(path, query, classifier)
        assert record["reason"] == reason, (path.name, query)
        assert record["frames"] == 100
    blue = _judge(mixed, BLUE_CLASS, classifier)
    assert blue["class"] == BLUE_CLASS and 60 <= blue["best_frame"] <= 62 and blue["best_score"] > 0.99
    short = write_colour_video(tmp_path / "short.mp4", ["red"] * 50)  # 5 s
    assert _judge(short, RED_CLASS, classifier)["reason"] == "too_short"


def test_verify_picks_the_best_frame_among_top1_frames():
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.9, 0.1]])
    predictions = FramePredictions(probs.argmax(dim=1), probs)
    hit = verify(predictions, 1)
    assert hit.hit and hit.best_frame == 1 and hit.best_score == pytest.approx(0.7)
    miss = verify(FramePredictions(torch.zeros(2, dtype=torch.int64), torch.tensor([[0.9, 0.1], [0.6, 0.4]])), 1)
    assert not miss.hit and miss.best_frame == 1 and miss.best_score == pytest.approx(0.4)


def test_preprocess_follows_the_model_and_centre_crops():
    import timm

    model = timm.create_model("test_resnet", pretrained=False)
    pre = Preprocess.for_model(model)
    assert (pre.crop, pre.mean) == (160, (0.5, 0.5, 0.5)) and pre.resize == round(160 / 0.95)
    frames = torch.zeros(2, pre.resize, 300, 3, dtype=torch.uint8)
    frames[:, :, 150:] = 255
    images = pre(frames)
    assert images.shape == (2, 3, 160, 160)
    assert images[0, 0, 0, 0] == -1 and images[0, 0, 0, -1] == 1  # the crop straddles the centre column
    torchvision_like = Preprocess.for_model(torch.nn.Linear(1, 1))
    assert (torchvision_like.crop, torchvision_like.resize) == (224, 256)
