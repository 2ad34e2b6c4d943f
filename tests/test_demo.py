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

from vito.demo import (
    EVERY,
    MeasureFrames,
    cell_coordinates,
    nearest_neighbour_accuracy,
    on_frame,
    subject_retrieval,
    subject_share,
)
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
    subject_mask,
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


def _rendered_subject(index: int, t: float) -> np.ndarray:
    """The subject's opacity read back from a rendered frame: white subject on a black wall, light at 1."""
    video = make_video(index)
    video.subject.texture = np.ones_like(video.subject.texture)
    for wall in video.walls:
        wall[...] = 0.0
    for knots in video.lights:
        knots[...] = 1.0
    return render_frame(video, t)[..., 0] / 255.0


@pytest.mark.parametrize(("index", "t"), [(0, 0.0), (3, 2.5), (5, TRAIN_SECONDS + 1.25)])
def test_subject_mask_is_where_the_frame_shows_the_subject(index: int, t: float) -> None:
    mask = subject_mask(make_video(index), t)
    assert mask.shape == (SIZE, SIZE) and mask.min() >= 0 and mask.max() <= 1
    assert np.abs(mask - _rendered_subject(index, t)).max() <= 0.5 / 255 + 1e-6
    assert mask.sum() == pytest.approx(make_video(index).subject.mask.sum(), rel=1e-5)  # never clipped by the edge


def test_subject_share_on_hand_made_maps() -> None:
    subject = torch.zeros(1, 8, 8)
    subject[0, :4, :4] = 1.0  # the top-left quarter; a 4x4 map has 4 cells fully inside it
    subject[0, 4:6, 4] = 0.5  # a half-transparent sliver: a quarter of cell (2, 2) at opacity 0.5
    inside = torch.zeros(1, 4, 4)
    inside[0, :2, :2] = 0.25
    assert subject_share(inside, subject).item() == pytest.approx(1.0)
    uniform = torch.full((1, 4, 4), 1 / 16)
    assert subject_share(uniform, subject).item() == pytest.approx(float(subject.mean()))
    outside = torch.zeros(1, 4, 4)
    outside[0, 3, 3] = 1.0
    assert subject_share(outside, subject).item() == 0.0
    edge = torch.zeros(1, 4, 4)
    edge[0, 2, 2] = 1.0
    assert subject_share(edge, subject).item() == pytest.approx(0.5 * 2 / 4)
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # a 2x2 map: the top-left cell is the subject's quarter
    assert subject_share(coarse, subject).item() == pytest.approx(1.0)


def test_subject_share_on_the_stride_grid() -> None:
    """A ResNet's 4x4 map of a 64-px input: cells centred on pixels 0, 16, 32, 48, so their footprints along an
    axis are [0, 8), [8, 24), [24, 40), [40, 64)."""
    subject = torch.zeros(1, 64, 64)
    subject[0, 8:24, 8:24] = 1.0  # exactly the footprint of cell (1, 1)
    cell = torch.zeros(1, 4, 4)
    cell[0, 1, 1] = 1.0
    assert subject_share(cell, subject, 64, grid="stride").item() == pytest.approx(1.0)
    assert subject_share(cell, subject, 64, grid="even").item() == pytest.approx(0.25)  # even tile [16, 32)^2
    corner = torch.zeros(1, 4, 4)
    corner[0, 3, 3] = 1.0
    subject[0, 52:64, 40:64] = 1.0  # half of the last cell's 24 x 24 footprint
    assert subject_share(corner, subject, 64, grid="stride").item() == pytest.approx(0.5)
    uniform = torch.full((1, 4, 4), 1 / 16)
    big = torch.ones(1, 64, 64)
    assert subject_share(uniform, big, 64, grid="stride").item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="grid"):
        subject_share(uniform, big, 64, grid="diagonal")


def test_the_networks_cells_are_centred_where_the_stride_grid_says() -> None:
    """Gradient centroid of each cell row of the demo's random-init ResNet-18 at 64 px: the input rows it
    depends on are centred on stride * row (the edge row is pulled inwards by the frame's edge)."""
    from vito.config import load_config
    from vito.models.vito import build_vito

    network = build_vito(load_config("demo")).online.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for fmap in network.backbone(images):
        h = fmap.shape[-2]
        for row in range(1, h):
            (grad,) = torch.autograd.grad(fmap[:, :, row].abs().sum(), images, retain_graph=True)
            weight = grad.abs().sum(dim=(0, 1, 3))
            centroid = float((weight * torch.arange(64)).sum() / weight.sum())
            assert centroid == pytest.approx(row * 64 / h, abs=1.0), (h, row)
    # the measure's geometry puts those centres there: input pixel 16 is on cell 1's centre
    assert cell_coordinates(4, 64, 64, "stride")[16].item() == pytest.approx(1.0)


def test_attention_is_drawn_where_its_cell_lies() -> None:
    mask = torch.zeros(1, 4, 4)
    mask[0, 2, 1] = 1.0
    drawn = on_frame(mask, 64, 64, grid="stride")[0]
    assert divmod(int(drawn.argmax()), 64) == (32, 16)
    even = on_frame(mask, 64, 64, grid="even")[0]
    assert even[39:41, 23:25].min() > 0.9  # the even tile's centre, (39.5, 23.5)


def test_measure_refuses_videos_whose_frames_are_not_the_rendered_ones(tmp_path: Path) -> None:
    """The subject masks come from the world, not the files: videos of other lengths are refused, not misread."""
    from vito.demo import measure_frames

    train, heldout = render_videos(tmp_path, num_videos=2)
    frames = measure_frames(train, heldout, 32)
    assert frames.query_subject.shape == (len(frames.queries), SIZE, SIZE)
    with pytest.raises(ValueError, match="held-out frames decoded but"):
        measure_frames(train, train, 32)
    renamed = [path.rename(path.with_name(f"clip{k}.mp4")) for k, path in enumerate(heldout)]
    with pytest.raises(ValueError, match="clip0.mp4: not a video of the demo's world"):
        measure_frames([p.rename(p.with_name(f"clip{k}.mp4")) for k, p in enumerate(train)], renamed, 32)


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


@torch.no_grad()
def _independent_attention_on_subject(network: torch.nn.Module, videos: Path, size: int) -> tuple[list[float], float]:
    """Attention mass on the subject per stage, from its definition: for each held-out frame and stage, the sum
    over cells of (attention x the subject's area fraction in that cell's footprint), the subject read back
    from frames rendered white on black; averaged over frames. Also the subject's mean share of the frame."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    network.eval()
    shares, areas = [], []
    for k, path in enumerate(sorted((videos / "heldout").glob("*.mp4"))):
        _, masks = network.pool(network.backbone((_decoded(path, size) - mean) / std))
        for i, frame in enumerate(range(0, int(HELDOUT_SECONDS * FPS), EVERY)):
            subject = _rendered_subject(k, TRAIN_SECONDS + frame / FPS)
            areas.append(subject.mean())
            row = []
            for stage in masks:
                h = stage.shape[-1]
                # the network's cell l is centred on input pixel l * size / h; a frame pixel belongs to the
                # cell whose centre is nearest (ties to the later cell)
                x = (np.arange(SIZE) + 0.5) * size / SIZE - 0.5
                cell = np.clip(np.floor(x / (size / h) + 0.5), 0, h - 1).astype(int)
                fraction = np.array([[subject[np.ix_(cell == a, cell == b)].mean() for b in range(h)]
                                     for a in range(h)])
                row.append(float((stage[i].numpy() * fraction).sum()))
            shares.append(row)
    return list(np.mean(shares, axis=0)), float(np.mean(areas))


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

    # attention on subject: stored, printed, and recomputed from the rendered frames
    looks = result["attention_on_subject"]
    for name, network in (("random_init", initial.online), ("trained", trained.online)):
        shares, area = _independent_attention_on_subject(network, tmp_path / "videos", size)
        assert len(looks[name]) == len(config.model.stages)
        assert looks[name] == pytest.approx(shares, abs=2e-3), name
        assert looks["subject_area"] == pytest.approx(area, abs=2e-3)
    line = re.search(r"random init ([\d.]+)% / ([\d.]+)% -> trained ([\d.]+)% / ([\d.]+)% \(the subject covers "
                     r"([\d.]+)%", printed)
    assert line, printed
    assert [float(v) for v in line.groups()] == pytest.approx(
        [100 * v for v in (*looks["random_init"], *looks["trained"], looks["subject_area"])], abs=0.051)
    assert 0 < looks["subject_area"] < 0.5 and all(0 <= v <= 1 for v in looks["trained"] + looks["random_init"])
    assert result["queries"] == NUM_VIDEOS * len(range(0, int(HELDOUT_SECONDS * FPS), EVERY))
    assert result["cpu_seconds"] > 0
