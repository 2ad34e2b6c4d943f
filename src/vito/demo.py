"""``vito demo``: the whole method in a few minutes on a laptop CPU, with nothing to download.

1. Render a few short videos: textured objects moving over moving textured backgrounds under slowly
   drifting light, one distinct scene per video. The first part of each video is for training, a later
   segment is held out.
2. Pretrain a small VITO model (ResNet-18, 64 px, attention pooling) on the training parts.
3. Ask one question: given a frame from a held-out segment, is its nearest training frame (cosine, 1-NN on
   the attention-pooled features) from the same scene? Answer it for the trained encoder and for the same encoder at its
   random initialisation. Video pretraining should raise the score: the model has learned what stays the
   same about a scene while objects move, the camera pans and the light changes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from vito.io import write_json

FPS = 12
SIZE = 144  # rendered frame side; even, as H.264 4:2:0 requires
TRAIN_SECONDS = 7.0
HELDOUT_SECONDS = 3.0
NUM_SCENES = 8


# --------------------------------------------------------------------------------------------------
# 1. Rendering


def _texture(kind: str, size: int, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float RGB texture [size, size, 3] in [0, 1] mixing two colours by a procedural pattern."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 16)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
    elif kind == "checker":
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "dots":
        t = ((np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period)) > 0.5).astype(np.float32)
    elif kind == "rings":
        cx, cy = rng.uniform(0, size, 2)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(x - cx, y - cy) / period)
    elif kind == "waves":
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period + 3 * np.sin(2 * math.pi * v / (3 * period)))
    else:  # "blobs": smoothed noise
        noise = torch.from_numpy(rng.standard_normal((1, 1, size // 8, size // 8)).astype(np.float32))
        t = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
        t = (t > 0).astype(np.float32)
    return colours[0] * t[..., None] + colours[1] * (1 - t[..., None])


def _shape_mask(shape: str, radius: float, size: int) -> np.ndarray:
    """A soft-edged [size, size] mask of a shape centred in the patch."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    if shape == "disc":
        inside = radius - np.hypot(x, y)
    elif shape == "square":
        inside = radius - np.maximum(abs(x), abs(y))
    elif shape == "ring":
        inside = radius * 0.35 - abs(np.hypot(x, y) - radius * 0.65)
    elif shape == "cross":
        inside = np.maximum(radius * 0.35 - abs(x), radius * 0.35 - abs(y))
        inside = np.minimum(inside, radius - np.maximum(abs(x), abs(y)))
    else:  # "triangle"
        inside = np.minimum(y + radius * 0.6, np.minimum(radius * 0.9 - y - 1.7 * x, radius * 0.9 - y + 1.7 * x) / 2)
    return np.clip(inside + 0.5, 0, 1)


@dataclass
class Sprite:
    texture: np.ndarray  # [p, p, 3]
    mask: np.ndarray  # [p, p]
    centre: np.ndarray  # start position (pixels)
    velocity: np.ndarray  # pixels per second, bouncing off the frame's edges


@dataclass
class Scene:
    background: np.ndarray  # [2 * SIZE, 2 * SIZE, 3], scrolled across the frame (a panning camera)
    pan: np.ndarray  # pixels per second
    sprites: list[Sprite]
    light_phase: np.ndarray  # per colour channel: the light drifts slowly in colour and brightness
    light_period: float


TEXTURES = ["stripes", "checker", "dots", "rings", "waves", "blobs"]
SHAPES = ["disc", "square", "ring", "cross", "triangle"]


def make_scene(index: int) -> Scene:
    """Scene ``index``: its own background texture, objects, motions and light; deterministic."""
    rng = np.random.default_rng(1000 + index)
    palette = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
    background = _texture(TEXTURES[index % len(TEXTURES)], 2 * SIZE, palette, rng)
    sprites = []
    for j in range(2):
        patch = int(rng.integers(40, 60))
        colours = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
        sprites.append(
            Sprite(
                texture=_texture(TEXTURES[(index + 2 + j) % len(TEXTURES)], patch, colours, rng),
                mask=_shape_mask(SHAPES[(index + j * 3) % len(SHAPES)], patch * 0.45, patch),
                centre=rng.uniform(patch, SIZE - patch, 2),
                velocity=rng.uniform(15, 35, 2) * rng.choice([-1, 1], 2),
            )
        )
    return Scene(
        background=background,
        pan=rng.uniform(4, 10, 2) * rng.choice([-1, 1], 2),
        sprites=sprites,
        light_phase=rng.uniform(0, 2 * math.pi, 3),
        light_period=rng.uniform(6, 10),
    )


def _bounce(start: float, velocity: float, t: float, low: float, high: float) -> float:
    """Position at time t of a point moving between low and high, reflecting at both ends."""
    span = high - low
    p = (start - low + velocity * t) % (2 * span)
    return low + (p if p <= span else 2 * span - p)


def render_frame(scene: Scene, t: float) -> np.ndarray:
    """The scene at time ``t`` (seconds) as uint8 [SIZE, SIZE, 3]."""
    span = scene.background.shape[0] - SIZE
    ox = int(_bounce(span / 2, scene.pan[0], t, 0, span))
    oy = int(_bounce(span / 2, scene.pan[1], t, 0, span))
    frame = scene.background[oy : oy + SIZE, ox : ox + SIZE].copy()
    for sprite in scene.sprites:
        p = sprite.mask.shape[0]
        cx = int(_bounce(sprite.centre[0], sprite.velocity[0], t, p / 2, SIZE - p / 2) - p / 2)
        cy = int(_bounce(sprite.centre[1], sprite.velocity[1], t, p / 2, SIZE - p / 2) - p / 2)
        region = frame[cy : cy + p, cx : cx + p]
        alpha = sprite.mask[..., None]
        frame[cy : cy + p, cx : cx + p] = alpha * sprite.texture + (1 - alpha) * region
    light = 0.7 + 0.3 * np.sin(2 * math.pi * t / scene.light_period + scene.light_phase)
    return np.clip(frame * light * 255 + 0.5, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """H.264 MP4 with a keyframe every second (cheap random access for the sampler)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "g": str(fps), "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    tmp.replace(path)
    return path


def render_videos(folder: Path, num_scenes: int = NUM_SCENES) -> tuple[list[Path], list[Path]]:
    """Render every scene; returns (training-part videos, held-out-segment videos), one of each per scene."""
    train, heldout = [], []
    for k in range(num_scenes):
        scene = make_scene(k)
        times = np.arange(int((TRAIN_SECONDS + HELDOUT_SECONDS) * FPS)) / FPS
        frames = [render_frame(scene, float(t)) for t in times]
        cut = int(TRAIN_SECONDS * FPS)
        train.append(write_video(folder / "train" / f"scene{k}.mp4", frames[:cut]))
        heldout.append(write_video(folder / "heldout" / f"scene{k}.mp4", frames[cut:]))
    return train, heldout


# --------------------------------------------------------------------------------------------------
# 2-3. Pretraining and the retrieval score


def load_frames(paths: list[Path], every: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``every``-th frame of each video as uint8 [N, size, size, 3], with its video's index [N]."""
    from vito.data.video import iter_frames

    frames, labels = [], []
    for label, path in enumerate(paths):
        kept = [f for i, f in enumerate(iter_frames(path, max_frames=10_000)) if i % every == 0]
        frames.append(_resize(torch.stack(kept), size))
        labels.append(torch.full((len(kept),), label))
    return torch.cat(frames), torch.cat(labels)


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def embed(network: torch.nn.Module, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """L2-normalised pooled features (VITO's multi-scale attention pooling, before the projector), [N, C].

    Frames are only resized and normalised: no augmentation at evaluation.
    """
    from vito.data.augment import normalize

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


def retrieval_accuracy(network: torch.nn.Module, train_videos: list[Path], heldout_videos: list[Path],
                       size: int) -> float:
    """1-NN scene retrieval: held-out frames against training frames."""
    bank, bank_labels = load_frames(train_videos, every=3, size=size)
    queries, query_labels = load_frames(heldout_videos, every=3, size=size)
    return nearest_neighbour_accuracy(embed(network, queries), query_labels, embed(network, bank), bank_labels)


def save_attention_examples(network, heldout_videos: list[Path], size: int, path: Path) -> Path:
    """Attention masks of the trained online network on one held-out frame per scene."""
    from vito.data.augment import normalize
    from vito.viz.attention import save_attention_grid

    frames, _ = load_frames(heldout_videos, every=10_000, size=SIZE)  # the first frame of each segment
    network.eval()
    with torch.no_grad():
        masks = network.attention_maps(normalize(_resize(frames, size).permute(0, 3, 1, 2)))
    titles = [p.stem for p in heldout_videos]
    return save_attention_grid(list(frames), [list(m) for m in masks], path, titles)


# --------------------------------------------------------------------------------------------------
# The command


def run_demo(out_dir: str | Path = "runs/demo", max_steps: int | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Render, pretrain, evaluate; writes result.json, loss_curve.png, attention.png into ``out_dir``."""
    from vito.config import load_config
    from vito.train.checkpoint import load_checkpoint
    from vito.train.loop import build_model, pretrain
    from vito.viz.curves import plot_loss_curve

    started = time.perf_counter()
    out = Path(out_dir)
    overrides = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    config = load_config("demo", overrides)
    size = config.data.image_size

    print(f"[1/4] rendering {NUM_SCENES} videos ({TRAIN_SECONDS:g} s training part + {HELDOUT_SECONDS:g} s "
          f"held-out segment each) into {out / 'videos'}")
    train_videos, heldout_videos = render_videos(out / "videos")

    print(f"[2/4] pretraining {config.model.backbone} at {size} px for {config.train.max_steps} steps")
    initial = build_model(config)  # the same weights the run starts from
    run = pretrain(config, data=out / "videos" / "train", run_dir=out, overwrite=True)  # the demo owns its folder
    trained = build_model(config)
    trained.load_state_dict(load_checkpoint(out)["model"])

    print("[3/4] scene retrieval: held-out frames vs training frames (1-NN, cosine)")
    before = retrieval_accuracy(initial.online, train_videos, heldout_videos, size)
    after = retrieval_accuracy(trained.online, train_videos, heldout_videos, size)

    print("[4/4] pictures")
    curve = plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
    attention = save_attention_examples(trained.online, heldout_videos, size, out / "attention.png")
    result = {
        "metric": "1-NN scene retrieval accuracy, held-out segments vs training segments",
        "random_init": before,
        "trained": after,
        "chance": 1.0 / NUM_SCENES,
        "steps": run.step,
        "final_loss": run.last_loss,
        "checkpoint": str(run.checkpoint),
        "loss_curve": str(curve),
        "attention": str(attention),
        "tensorboard": str(out / "tb"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "result.json", result)
    print(f"\nscene retrieval accuracy: random init {before:.1%} -> trained {after:.1%} (chance {1 / NUM_SCENES:.1%})")
    print(f"  run folder   {out}\n  checkpoint   {run.checkpoint}\n  loss curve   {curve}\n  attention    {attention}")
    print(f"  tensorboard  tensorboard --logdir {out / 'tb'}\n  result       {out / 'result.json'}")
    return result
