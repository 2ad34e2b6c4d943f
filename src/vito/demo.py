"""``vito demo``: the whole method in a few minutes on a laptop CPU, with nothing to download.

1. Render a few short videos (``vito.demo_world``): in each, one *subject* (a textured shape) moves around
   while the camera pans along a wall of ever-new random textures under drifting light. The first part of
   each video is for training; a later segment, along a stretch of wall no training frame shows, is held out.
2. Pretrain a small VITO model (ResNet-18, 64 px, attention pooling) on the training parts.
3. Ask one question, for the trained encoder and for the same encoder at its seeded random initialisation:
   given a frame of a held-out segment, is its nearest training frame (cosine, 1-NN on the attention-pooled
   features) from the same video? The videos share nothing but the distribution they are drawn from, except
   their subjects, so only an encoder that recognises the subject across new surroundings, light and
   positions beats chance (1 / number of videos); a random network, which mostly sees the background,
   stays near it. Pretraining on video should raise the score: what persists through a clip is the subject.
4. Ask where each encoder looks: the share of its attention mass that falls on the subject of the held-out
   frames (the world knows where it put the subject), against the subject's share of the frame, about what
   attention spread evenly gets (paper §B.1: attention should go to what is stable across time and
   discriminative, here the subject).
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vito.config import load_config
from vito.data.augment import normalize
from vito.data.video import iter_frames
from vito.demo_world import (
    HELDOUT_SECONDS,
    NUM_VIDEOS,
    SIZE,
    TRAIN_SECONDS,
    make_video,
    part_times,
    render_videos,
    subject_mask,
)
from vito.engine.checkpoint import load_checkpoint
from vito.io import write_json
from vito.models.vito import build_vito
from vito.pretrain import loop
from vito.viz.attention import save_attention_grid
from vito.viz.curves import plot_loss_curve

MEASURE = "subject retrieval: held-out frame -> nearest training frame (1-NN, cosine) from the same video"
EVERY = 3  # frames kept for the measure: every third (4 per second)


# --------------------------------------------------------------------------------------------------
# 3. The measure


@dataclass
class MeasureFrames:
    """The frames the measure looks at, decoded once and shared by every encoder it scores."""

    bank: torch.Tensor  # uint8 [N, S, S, 3]: training frames (the parts the model was trained on)
    bank_video: torch.Tensor  # int64 [N]
    queries: torch.Tensor  # uint8 [M, S, S, 3]: frames of the held-out segments, never trained on
    query_video: torch.Tensor  # int64 [M]
    query_subject: torch.Tensor | None = None  # float [M, SIZE, SIZE]: the subject's opacity in each query frame

    @property
    def chance(self) -> float:
        """Accuracy of a guess: 1 / number of videos."""
        return 1.0 / len(torch.unique(self.bank_video))


def load_frames(paths: list[Path], every: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``every``-th frame of each video as uint8 [N, size, size, 3], with its video's index [N]."""
    frames, labels = [], []
    for label, path in enumerate(paths):
        kept = [f for i, f in enumerate(iter_frames(path, max_frames=10_000)) if i % every == 0]
        frames.append(_resize(torch.stack(kept), size))
        labels.append(torch.full((len(kept),), label))
    return torch.cat(frames), torch.cat(labels)


def measure_frames(train_videos: list[Path], heldout_videos: list[Path], size: int) -> MeasureFrames:
    """Training frames as the bank, held-out frames as the queries; video ``k`` is the same in both lists."""
    if [p.name for p in train_videos] != [p.name for p in heldout_videos]:
        raise ValueError("training and held-out videos must be listed in the same order")
    queries, query_video = load_frames(heldout_videos, EVERY, size)
    subjects = torch.from_numpy(np.stack([subject_mask(make_video(video_index(path)), t) for path in heldout_videos
                                          for t in part_times(heldout=True)[::EVERY]]))
    if len(subjects) != len(queries):
        raise ValueError(f"{len(queries)} held-out frames decoded but {len(subjects)} rendered: not the demo's videos")
    return MeasureFrames(*load_frames(train_videos, EVERY, size), queries, query_video, subjects)


def video_index(path: Path) -> int:
    """The world's index of a rendered video, from its name (``video3.mp4`` -> 3): its subject masks follow."""
    digits = path.stem.removeprefix("video")
    if not digits.isdigit():
        raise ValueError(f"{path.name}: not a video of the demo's world (named videoK.mp4)")
    return int(digits)


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def embed(network: torch.nn.Module, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """L2-normalised pooled features (VITO's multi-scale attention pooling, before the projector), [N, C].

    Frames are only resized and normalised: no augmentation at evaluation.
    """
    network.eval()
    out = []
    for chunk in frames.split(batch):
        pooled, _ = network.pool(network.backbone(normalize(chunk.permute(0, 3, 1, 2))))
        out.append(F.normalize(pooled.float(), dim=1))
    return torch.cat(out)


def nearest_neighbour_accuracy(queries: torch.Tensor, query_labels: torch.Tensor,
                               bank: torch.Tensor, bank_labels: torch.Tensor) -> float:
    """Fraction of queries whose most similar (cosine) bank item has the same label (1-NN)."""
    nearest = (queries @ bank.T).argmax(dim=1)
    return float((bank_labels[nearest] == query_labels).float().mean())


def subject_retrieval(network: torch.nn.Module, frames: MeasureFrames) -> float:
    """The demo's measure: share of held-out frames whose nearest training frame is of the same video."""
    return nearest_neighbour_accuracy(embed(network, frames.queries), frames.query_video,
                                      embed(network, frames.bank), frames.bank_video)


# Where a cell of an attention map lies on the frame. A ResNet's stride-2 layers (3x3, padding 1) keep the
# input positions 0, 2, 4, ... of an even-sized input, so cell l of a stride-s map is centred on input pixel
# s * l: its cells sit half a cell up and left of an even tiling of the image ("stride" grid). At 64 px that
# is 8 px for the 4x4 map and 16 px for the 2x2 map; the top row and left column are centred on the frame's
# edge. The "even" grid is the plain tiling (each cell centred in its tile), right for patch-based encoders.
GRIDS = ("stride", "even")


def cell_coordinates(cells: int, pixels: int, input_size: int, grid: str) -> torch.Tensor:
    """For each of ``pixels`` frame pixels along one axis, its position in cell units (cell l is centred on l).

    The frame is resized whole to ``input_size`` before the network sees it.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, not {grid!r}")
    x = (torch.arange(pixels, dtype=torch.float64) + 0.5) * input_size / pixels - 0.5  # network input pixels
    if grid == "even":
        return (x + 0.5) * cells / input_size - 0.5
    stride = 2 ** math.ceil(math.log2(input_size / cells))  # the stage's stride: cells = ceil(input_size / stride)
    return x / stride


def _nearest_cell(cells: int, pixels: int, input_size: int, grid: str) -> torch.Tensor:
    """[cells, pixels] one-hot: the cell whose centre is nearest to each frame pixel (its footprint)."""
    nearest = (cell_coordinates(cells, pixels, input_size, grid) + 0.5).floor().clamp(0, cells - 1).long()  # ties: up
    return F.one_hot(nearest, cells).T.float()


def subject_share(masks: torch.Tensor, subject: torch.Tensor, input_size: int | None = None,
                  grid: str = "even") -> torch.Tensor:
    """Per image, the share of attention mass on the subject: ``sum_cells mask[cell] * subject area in cell``.

    ``masks [N, h, w]`` (each sums to 1); ``subject [N, H, W]``: the subject's opacity at frame resolution. A
    cell's footprint is the frame pixels nearest to its centre (``grid``; ``input_size``: the side of the
    network's input, needed by the "stride" grid), and it counts by the fraction of that footprint the subject
    covers: all mass on cells inside the subject gives 1; on the even grid, attention spread evenly gives the
    subject's share of the frame.
    """
    (h, w), (height, width) = masks.shape[-2:], subject.shape[-2:]
    size = input_size or height
    rows, cols = _nearest_cell(h, height, size, grid), _nearest_cell(w, width, size, grid)
    covered = rows @ subject.float() @ cols.T  # [N, h, w]: subject area in each footprint
    inside = covered / (rows.sum(1)[:, None] * cols.sum(1)[None, :])
    return (masks.float() * inside).flatten(1).sum(dim=1)


def on_frame(masks: torch.Tensor, pixels: int, input_size: int, grid: str = "stride") -> torch.Tensor:
    """``masks [N, h, w]`` -> ``[N, pixels, pixels]``: bilinear between cell centres, each cell where it lies.

    What the attention pictures draw: a plain resize would put a "stride" grid's cells half a cell too far
    down and right (the "bottom-centre" look of the first demo pictures).
    """
    h, w = masks.shape[-2:]
    v = cell_coordinates(h, pixels, input_size, grid) * 2 / max(h - 1, 1) - 1
    u = cell_coordinates(w, pixels, input_size, grid) * 2 / max(w - 1, 1) - 1
    where = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1).float().expand(len(masks), -1, -1, -1)
    drawn = F.grid_sample(masks[:, None].float(), where, mode="bilinear", padding_mode="border", align_corners=True)
    return drawn[:, 0]


@torch.no_grad()
def attention_on_subject(network: torch.nn.Module, frames: MeasureFrames, input_size: int, batch: int = 64,
                         grid: str = "stride") -> list[float]:
    """Mean share of attention mass on the subject over the held-out frames, one value per pooled stage."""
    network.eval()
    shares = []
    for chunk, subject in zip(frames.queries.split(batch), frames.query_subject.split(batch), strict=True):
        masks = network.attention_maps(normalize(chunk.permute(0, 3, 1, 2)))
        shares.append(torch.stack([subject_share(m, subject, input_size, grid) for m in masks], dim=1))
    return torch.cat(shares).mean(dim=0).tolist()


def save_attention_examples(network: torch.nn.Module, heldout_videos: list[Path], size: int, path: Path) -> Path:
    """Attention masks of the trained online network on one held-out frame per video, each cell drawn where
    the network's cell lies on the frame (``on_frame``)."""
    frames, _ = load_frames(heldout_videos, every=10_000, size=SIZE)  # the first frame of each segment
    network.eval()
    with torch.no_grad():
        masks = network.attention_maps(normalize(_resize(frames, size).permute(0, 3, 1, 2)))
    drawn = [on_frame(m, SIZE, size) for m in masks]
    titles = [p.stem for p in heldout_videos]
    return save_attention_grid(list(frames), [list(m) for m in drawn], path, titles)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the DataLoader workers).

    The demo's budget is stated in CPU time, not wall time: on a shared machine the wall time depends on
    the other jobs.
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------------------------------
# The command


def run_demo(out_dir: str | Path = "runs/demo", max_steps: int | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Render, pretrain, measure; writes result.json, loss_curve.png, attention.png into ``out_dir``."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    out = Path(out_dir)
    overrides = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    config = load_config("demo", overrides)
    size = config.data.image_size

    print(f"[1/4] rendering {NUM_VIDEOS} videos ({TRAIN_SECONDS:g} s training part + {HELDOUT_SECONDS:g} s "
          f"held-out segment each) into {out / 'videos'}")
    train_videos, heldout_videos = render_videos(out / "videos")

    print(f"[2/4] pretraining {config.model.backbone} at {size} px for {config.train.max_steps} steps")
    initial = build_vito(config)  # the same weights the run starts from
    run = loop.pretrain(config, data=out / "videos" / "train", run_dir=out, overwrite=True)  # the demo owns its folder
    trained = build_vito(config)
    trained.load_state_dict(load_checkpoint(out)["model"])

    print(f"[3/4] {MEASURE}")
    frames = measure_frames(train_videos, heldout_videos, size)
    before, after = subject_retrieval(initial.online, frames), subject_retrieval(trained.online, frames)
    looks = {"trained": attention_on_subject(trained.online, frames, size),
             "random_init": attention_on_subject(initial.online, frames, size),
             "subject_area": float(frames.query_subject.mean())}

    print("[4/4] pictures")
    curve = plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
    attention = save_attention_examples(trained.online, heldout_videos, size, out / "attention.png")
    result = {
        "metric": MEASURE,
        "random_init": before,
        "trained": after,
        "chance": frames.chance,
        "attention_on_subject": looks,
        "stages": list(config.model.stages),
        "queries": len(frames.queries),
        "bank": len(frames.bank),
        "steps": run.step,
        "final_loss": run.last_loss,
        "checkpoint": str(run.checkpoint),
        "loss_curve": str(curve),
        "attention": str(attention),
        "tensorboard": str(out / "tb"),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_started, 1),
    }
    write_json(out / "result.json", result)
    print(f"\nsubject retrieval on held-out frames: random init {before:.1%} -> trained {after:.1%} "
          f"(chance {frames.chance:.1%}; {len(frames.queries)} held-out frames, {len(frames.bank)} training frames)")
    print(f"attention on subject (share of attention mass, per pooled stage {list(config.model.stages)}): random "
          f"init {_shares(looks['random_init'])} -> trained {_shares(looks['trained'])} (the subject covers "
          f"{looks['subject_area']:.1%} of the frame)")
    print(f"  run folder   {out}\n  checkpoint   {run.checkpoint}\n  loss curve   {curve}\n  attention    {attention}")
    print(f"  tensorboard  tensorboard --logdir {out / 'tb'}\n  result       {out / 'result.json'}")
    print(f"  CPU time     {result['cpu_seconds']:.0f} s (this process and its data-loader workers)")
    return result


def _shares(values: list[float]) -> str:
    return " / ".join(f"{v:.1%}" for v in values)
