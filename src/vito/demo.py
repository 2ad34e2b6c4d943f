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
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vito.config import load_config
from vito.data.augment import normalize
from vito.data.video import iter_frames
from vito.demo_world import HELDOUT_SECONDS, NUM_VIDEOS, SIZE, TRAIN_SECONDS, render_videos
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
    return MeasureFrames(*load_frames(train_videos, EVERY, size), *load_frames(heldout_videos, EVERY, size))


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


def save_attention_examples(network: torch.nn.Module, heldout_videos: list[Path], size: int, path: Path) -> Path:
    """Attention masks of the trained online network on one held-out frame per video."""
    frames, _ = load_frames(heldout_videos, every=10_000, size=SIZE)  # the first frame of each segment
    network.eval()
    with torch.no_grad():
        masks = network.attention_maps(normalize(_resize(frames, size).permute(0, 3, 1, 2)))
    titles = [p.stem for p in heldout_videos]
    return save_attention_grid(list(frames), [list(m) for m in masks], path, titles)


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

    print("[4/4] pictures")
    curve = plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
    attention = save_attention_examples(trained.online, heldout_videos, size, out / "attention.png")
    result = {
        "metric": MEASURE,
        "random_init": before,
        "trained": after,
        "chance": frames.chance,
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
    print(f"  run folder   {out}\n  checkpoint   {run.checkpoint}\n  loss curve   {curve}\n  attention    {attention}")
    print(f"  tensorboard  tensorboard --logdir {out / 'tb'}\n  result       {out / 'result.json'}")
    print(f"  CPU time     {result['cpu_seconds']:.0f} s (this process and its data-loader workers)")
    return result
