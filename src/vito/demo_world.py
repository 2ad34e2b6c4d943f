"""The world ``vito demo`` renders: one subject per video, followed by a camera through ever-new surroundings.

Why this world: a measure of learning must be one that structure any random network already sees cannot
solve. In the first version of the demo every video had its own fixed background, and a random ResNet-18
told the videos apart by background alone (80 % scene retrieval, chance 12.5 %). Here what persists through
a video, and tells it from the others, is only its *subject*, a textured shape that moves around the frame:

- the camera pans along a wall of background tiles, each tile with its own random texture and colours, drawn
  from one distribution shared by all videos, so two seconds later the surroundings are new;
- the light drifts in brightness and colour, along a random path per video;
- the held-out segment of each video (``heldout/``) pans along a stretch of wall that no training frame shows,
  under new light, with the subject at new positions.

So a held-out frame can find frames of its own video only through the subject. VITO's objective asks for
exactly that: views of one clip, taken up to a window apart, must match each other and not other videos.
Everything is a deterministic function of the video index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

FPS = 12
SIZE = 144  # rendered frame side; even, as H.264 4:2:0 requires
TRAIN_SECONDS = 7.0
HELDOUT_SECONDS = 3.0
NUM_VIDEOS = 8
PAN_SPEED = (90.0, 130.0)  # camera speed along the wall, pixels per second
TILE_WIDTH = (70, 130)  # width of one background tile, pixels
SUBJECT_SIZE = 64  # side of the subject's patch, pixels
WALL_SATURATION = 0.5  # wall colours are pulled halfway to grey: the subjects carry the vivid colours
LIGHT_KNOT_SECONDS = 1.5  # the light takes a new random value this often and moves smoothly in between

TEXTURES = ("stripes", "checker", "dots", "rings", "waves", "blobs")
SHAPES = ("disc", "square", "ring", "cross", "triangle", "diamond", "bar", "star")


def texture(kind: str, height: int, width: int, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float RGB texture [height, width, 3] in [0, 1] mixing two colours by a procedural pattern."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
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
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(x - cx, y - cy) / period)
    elif kind == "waves":
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period + 3 * np.sin(2 * math.pi * v / (3 * period)))
    else:  # "blobs": thresholded smooth noise
        noise = torch.from_numpy(rng.standard_normal((1, 1, height // 8 + 1, width // 8 + 1)).astype(np.float32))
        t = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0, 0].numpy()
        t = (t > 0).astype(np.float32)
    return colours[0] * t[..., None] + colours[1] * (1 - t[..., None])


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A soft-edged [size, size] mask in [0, 1] of a shape filling most of the patch."""
    radius = size * 0.45
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    if shape == "disc":
        inside = radius - np.hypot(x, y)
    elif shape == "square":
        inside = radius * 0.85 - np.maximum(abs(x), abs(y))
    elif shape == "ring":
        inside = radius * 0.3 - abs(np.hypot(x, y) - radius * 0.7)
    elif shape == "cross":
        inside = np.maximum(radius * 0.3 - abs(x), radius * 0.3 - abs(y))
        inside = np.minimum(inside, radius - np.maximum(abs(x), abs(y)))
    elif shape == "triangle":
        inside = np.minimum(y + radius * 0.6, np.minimum(radius * 0.9 - y - 1.7 * x, radius * 0.9 - y + 1.7 * x) / 2)
    elif shape == "diamond":
        inside = (radius - abs(x) - abs(y)) / math.sqrt(2)
    elif shape == "bar":
        inside = np.minimum(radius * 0.35 - abs(y), radius - abs(x))
    else:  # "star": five points
        angle = np.arctan2(y, x)
        inside = radius * (0.55 + 0.4 * np.cos(5 * angle)) - np.hypot(x, y)
    return np.clip(inside + 0.5, 0, 1)


@dataclass
class Subject:
    """What persists through one video: a textured shape, moving and bouncing off the frame's edges."""

    texture: np.ndarray  # [p, p, 3]
    mask: np.ndarray  # [p, p]
    start: np.ndarray  # (x, y) centre at t = 0, pixels
    velocity: np.ndarray  # (x, y) pixels per second


@dataclass
class Video:
    subject: Subject
    walls: tuple[np.ndarray, np.ndarray]  # training and held-out stretches of wall, [H, W, 3] each
    pan: float  # camera speed along the wall, pixels per second
    sway: tuple[float, float]  # vertical camera sway: amplitude (pixels) and period (seconds)
    lights: tuple[np.ndarray, np.ndarray]  # training and held-out light: [knots, 3] gains every LIGHT_KNOT_SECONDS


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """One RGB colour in [0, 1] from hue (turns), saturation and value."""
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * (hue % 1.0)) % 6.0
    return (value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def make_subject(index: int, rng: np.random.Generator) -> Subject:
    """Subject ``index``: its own shape, texture kind and hue (distinct across the first 8)."""
    hue = index / len(SHAPES) + rng.uniform(-0.03, 0.03)
    colours = np.stack([_hsv(hue, rng.uniform(0.8, 1.0), rng.uniform(0.85, 1.0)),
                        _hsv(hue + 0.04, rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6))])
    p = SUBJECT_SIZE
    return Subject(
        texture=texture(TEXTURES[(index * 5 + 1) % len(TEXTURES)], p, p, colours, rng),
        mask=shape_mask(SHAPES[index % len(SHAPES)], p),
        start=rng.uniform(p / 2, SIZE - p / 2, 2),
        velocity=rng.uniform(20, 45, 2) * rng.choice([-1, 1], 2),
    )


def make_wall(seconds: float, pan: float, height: int, rng: np.random.Generator) -> np.ndarray:
    """A stretch of wall long enough for ``seconds`` of panning: tiles of fresh random textures and colours."""
    length = int(math.ceil(seconds * pan)) + SIZE + 1
    tiles, covered = [], 0
    while covered < length:
        width = int(rng.integers(*TILE_WIDTH))
        palette = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
        grey = palette.mean(axis=1, keepdims=True)
        palette = grey + WALL_SATURATION * (palette - grey)
        tiles.append(texture(TEXTURES[int(rng.integers(len(TEXTURES)))], height, width, palette, rng))
        covered += width
    return np.concatenate(tiles, axis=1)[:, :length]


def _light_knots(count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, 3] per-channel gains: a brightness in [0.6, 1.1] times a slight tint (up to 8 % per channel)."""
    brightness = rng.uniform(0.6, 1.1, size=(count, 1))
    return (brightness * (1 + rng.uniform(-0.08, 0.08, size=(count, 3)))).astype(np.float32)


def make_video(index: int) -> Video:
    """Video ``index`` of the demo's world; deterministic."""
    rng = np.random.default_rng(1000 + index)
    subject = make_subject(index, rng)
    pan = float(rng.uniform(*PAN_SPEED)) * float(rng.choice([-1, 1]))
    amplitude = float(rng.uniform(0.1, 0.25) * SIZE)
    height = SIZE + 2 * int(math.ceil(amplitude))
    walls = (make_wall(TRAIN_SECONDS, abs(pan), height, rng), make_wall(HELDOUT_SECONDS, abs(pan), height, rng))
    lights = tuple(_light_knots(int(seconds / LIGHT_KNOT_SECONDS) + 2, rng) for seconds in (TRAIN_SECONDS, HELDOUT_SECONDS))
    return Video(subject, walls, pan, (amplitude, float(rng.uniform(3, 6))), lights)


def _bounce(start: float, velocity: float, t: float, low: float, high: float) -> float:
    """Position at time t of a point moving between low and high, reflecting at both ends."""
    span = high - low
    p = (start - low + velocity * t) % (2 * span)
    return low + (p if p <= span else 2 * span - p)


def light_at(knots: np.ndarray, t: float) -> np.ndarray:
    """Per-channel light gain ``t`` seconds into a part: smooth (cosine) interpolation between random knots."""
    position = t / LIGHT_KNOT_SECONDS
    k = int(position)
    w = 0.5 - 0.5 * math.cos(math.pi * (position - k))
    return (1 - w) * knots[k] + w * knots[k + 1]


def render_frame(video: Video, t: float) -> np.ndarray:
    """The video at time ``t`` (seconds) as uint8 [SIZE, SIZE, 3]; held-out times use the held-out wall."""
    heldout = t >= TRAIN_SECONDS
    wall, knots = video.walls[int(heldout)], video.lights[int(heldout)]
    into_part = t - TRAIN_SECONDS if heldout else t
    travelled = abs(video.pan) * into_part
    ox = int(travelled) if video.pan > 0 else wall.shape[1] - SIZE - int(travelled)
    amplitude, period = video.sway
    oy = int(round(amplitude * (1 + math.sin(2 * math.pi * t / period))))
    frame = wall[oy : oy + SIZE, ox : ox + SIZE].copy()
    s = video.subject
    p = s.mask.shape[0]
    top, left = subject_corner(video, t)
    alpha = s.mask[..., None]
    frame[top : top + p, left : left + p] = alpha * s.texture + (1 - alpha) * frame[top : top + p, left : left + p]
    return np.clip(frame * light_at(knots, into_part) * 255 + 0.5, 0, 255).astype(np.uint8)


def subject_corner(video: Video, t: float) -> tuple[int, int]:
    """(top, left) pixel of the subject's patch in the frame at time ``t``."""
    s = video.subject
    p = s.mask.shape[0]
    left = int(_bounce(s.start[0], s.velocity[0], t, p / 2, SIZE - p / 2) - p / 2)
    top = int(_bounce(s.start[1], s.velocity[1], t, p / 2, SIZE - p / 2) - p / 2)
    return top, left


def subject_mask(video: Video, t: float) -> np.ndarray:
    """Where the subject is in the frame at time ``t``: float32 [SIZE, SIZE], its opacity in [0, 1].

    The ground truth of "attention on subject" (``vito.demo``): the world places the subject itself, so no
    segmentation is needed. Soft at the shape's edge exactly as the frame blends it.
    """
    mask = np.zeros((SIZE, SIZE), np.float32)
    top, left = subject_corner(video, t)
    p = video.subject.mask.shape[0]
    mask[top : top + p, left : left + p] = video.subject.mask
    return mask


def part_times(heldout: bool) -> np.ndarray:
    """The times (seconds) of the frames of a video's training part or of its held-out segment, in order."""
    if heldout:
        return TRAIN_SECONDS + np.arange(int(HELDOUT_SECONDS * FPS)) / FPS
    return np.arange(int(TRAIN_SECONDS * FPS)) / FPS


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


def render_videos(folder: Path, num_videos: int = NUM_VIDEOS) -> tuple[list[Path], list[Path]]:
    """Render every video; returns (training-part videos, held-out-segment videos), one of each per video."""
    train, heldout = [], []
    for k in range(num_videos):
        video = make_video(k)
        train.append(write_video(folder / "train" / f"video{k}.mp4",
                                 [render_frame(video, t) for t in part_times(heldout=False)]))
        heldout.append(write_video(folder / "heldout" / f"video{k}.mp4",
                                   [render_frame(video, t) for t in part_times(heldout=True)]))
    return train, heldout
