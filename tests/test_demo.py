"""`vito demo`: its world (only the subject is shared between a video's parts), its measure, and the command
end to end with a few steps, its printed numbers recomputed here independently."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vito.demo import EVERY, MeasureFrames, nearest_neighbour_accuracy, subject_retrieval
from vito.demo_world import (
    FPS,
    HELDOUT_SECONDS,
    NUM_VIDEOS,
    SHAPES,
    SIZE,
    TRAIN_SECONDS,
    make_video,
    render_frame,
    render_videos,
)


def test_videos_are_deterministic_move_and_differ() -> None:
    first, later = render_frame(make_video(0), 0.0), render_frame(make_video(0), 1.0)
    other = render_frame(make_video(1), 0.0)
    assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - later).mean() > 20  # the camera pans on to new tiles within a second
    assert np.abs(first.astype(int) - other).mean() > 20
    assert np.array_equal(first, render_frame(make_video(0), 0.0))


def test_each_video_has_its_own_subject_shape() -> None:
    masks = [make_video(k).subject.mask for k in range(NUM_VIDEOS)]
    assert len(SHAPES) >= NUM_VIDEOS
    for i in range(NUM_VIDEOS):
        for j in range(i):
            assert np.abs(masks[i] - masks[j]).mean() > 0.05, (i, j)


def _background_only(video, t: float, wall: int) -> np.ndarray:
    """The frame at ``t`` with the subject made invisible and one of the two walls blanked."""
    video.subject.mask = np.zeros_like(video.subject.mask)
    video.walls[wall][...] = 0.0
    return render_frame(video, t)


@pytest.mark.parametrize("t", [0.0, 3.3, TRAIN_SECONDS - 1 / FPS])
def test_training_frames_never_show_the_held_out_wall(t: float) -> None:
    assert np.array_equal(_background_only(make_video(2), t, wall=1), render_frame(_no_subject(make_video(2)), t))
    assert not _background_only(make_video(2), t, wall=0).any()


@pytest.mark.parametrize("t", [TRAIN_SECONDS, TRAIN_SECONDS + 1.7, TRAIN_SECONDS + HELDOUT_SECONDS - 1 / FPS])
def test_held_out_frames_never_show_the_training_wall(t: float) -> None:
    assert np.array_equal(_background_only(make_video(2), t, wall=0), render_frame(_no_subject(make_video(2)), t))
    assert not _background_only(make_video(2), t, wall=1).any()


def _no_subject(video):
    video.subject.mask = np.zeros_like(video.subject.mask)
    return video


def test_held_out_wall_and_light_are_new() -> None:
    video = make_video(3)
    train_wall, heldout_wall = video.walls
    columns = {col.tobytes() for col in train_wall.transpose(1, 0, 2)}
    assert not any(col.tobytes() in columns for col in heldout_wall.transpose(1, 0, 2))
    assert not np.allclose(video.lights[0][: len(video.lights[1])], video.lights[1])


def test_rendered_videos_are_h264_with_a_held_out_segment(tmp_path: Path) -> None:
    train, heldout = render_videos(tmp_path, num_videos=2)
    assert [p.parent.name for p in train + heldout] == ["train", "train", "heldout", "heldout"]
    for path, seconds in [(train[0], TRAIN_SECONDS), (heldout[0], HELDOUT_SECONDS)]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (SIZE, SIZE)
        assert frames == int(seconds * FPS)


def test_nearest_neighbour_accuracy() -> None:
    bank = torch.eye(3)
    queries = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.5, 0.0]])
    labels = torch.tensor([0, 2, 1])
    assert nearest_neighbour_accuracy(queries, labels, bank, torch.arange(3)) == pytest.approx(2 / 3)


class _MeanColour(torch.nn.Module):
    """A stand-in network whose 'pooled feature' is the image's mean colour (plus a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Identity()

    def pool(self, images: torch.Tensor) -> tuple[torch.Tensor, list]:
        return torch.cat([images.mean(dim=(2, 3)), torch.full_like(images[:, :1, 0, 0], 10.0)], dim=1), []


def test_subject_retrieval_scores_same_video_neighbours() -> None:
    """Video k's frames are all of one colour; query 3 has video 0's colour although it belongs to video 1."""
    colours = torch.tensor([[250, 0, 0], [0, 250, 0], [0, 0, 250]], dtype=torch.uint8)

    def frames(videos: list[int], shown: list[int]) -> torch.Tensor:
        return colours[shown].view(-1, 1, 1, 3).expand(-1, 8, 8, 3).contiguous()

    bank_video = [0, 0, 1, 1, 2, 2]
    query_video, query_shown = [0, 1, 2, 1], [0, 1, 2, 0]
    measure = MeasureFrames(frames(bank_video, bank_video), torch.tensor(bank_video),
                            frames(query_video, query_shown), torch.tensor(query_video))
    assert measure.chance == pytest.approx(1 / 3)
    assert subject_retrieval(_MeanColour(), measure) == pytest.approx(3 / 4)


# --------------------------------------------------------------------------------------------------
# End to end, with the printed numbers recomputed from the run's files


def _decoded(path: Path, size: int) -> torch.Tensor:
    """Every EVERY-th frame of a video, decoded with PyAV directly and resized as the demo documents."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % EVERY == 0]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255) / 255.0


@torch.no_grad()
def _independent_score(network: torch.nn.Module, videos: Path, size: int) -> float:
    """The measure from its definition: cosine 1-NN of held-out frames among training frames, same video?"""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    network.eval()

    def features(part: str) -> tuple[np.ndarray, np.ndarray]:
        vectors, labels = [], []
        for k, path in enumerate(sorted((videos / part).glob("*.mp4"))):
            pooled, _ = network.pool(network.backbone((_decoded(path, size) - mean) / std))
            vectors.append(F.normalize(pooled, dim=1).numpy())
            labels += [k] * len(pooled)
        return np.concatenate(vectors), np.array(labels)

    bank, bank_labels = features("train")
    queries, query_labels = features("heldout")
    return float(np.mean(bank_labels[np.argmax(queries @ bank.T, axis=1)] == query_labels))


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys) -> None:
    from vito.cli import main
    from vito.config import load_config
    from vito.engine.checkpoint import load_checkpoint
    from vito.models.vito import build_vito

    assert main(["demo", "--out", str(tmp_path), "--max-steps", "4", "data.batch_size=8"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"] == 4 and result["chance"] == pytest.approx(1 / NUM_VIDEOS)
    for name in ("loss_curve.png", "attention.png", "checkpoints/last.pt", "config.yaml", "train.log"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    # the printed and stored numbers are the measure of these very weights, computed another way here
    config = load_config("demo", ["train.max_steps=4", "data.batch_size=8"])
    size = config.data.image_size
    initial, trained = build_vito(config), build_vito(config)
    trained.load_state_dict(load_checkpoint(tmp_path)["model"])
    random_init = _independent_score(initial.online, tmp_path / "videos", size)
    after = _independent_score(trained.online, tmp_path / "videos", size)
    assert result["random_init"] == pytest.approx(random_init, abs=1e-6)
    assert result["trained"] == pytest.approx(after, abs=1e-6)
    line = re.search(r"random init ([\d.]+)% -> trained ([\d.]+)% \(chance ([\d.]+)%", printed)
    assert line, printed
    assert [float(v) for v in line.groups()] == pytest.approx(
        [100 * random_init, 100 * after, 100 / NUM_VIDEOS], abs=0.051)
    assert result["queries"] == NUM_VIDEOS * len(range(0, int(HELDOUT_SECONDS * FPS), EVERY))
    assert result["cpu_seconds"] > 0
