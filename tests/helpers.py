"""Small helpers shared by test modules: a free TCP port for gloo process groups, a deep tensor comparison
for "resume equals an uninterrupted run" checks, a PNG that is only a header (a decompression bomb), and the tiny
pretraining config the loop, preemption and run-folder tests train with (on the ``videos`` fixture)."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import torch

from vito.config import Config, load_config

TINY_OVERRIDES = [
    "model.backbone=resnet18", "model.projector_hidden=64", "model.projector_dim=32",
    "data.image_size=32", "data.decode_short_side=48", "data.batch_size=4", "data.num_workers=0",
    "optim.warmup_steps=1", "train.precision=fp32", "train.log_every=1", "train.checkpoint_every=2",
    "train.stop_grace_seconds=0",  # no step-time estimate (its own test turns it on): tests count forward calls
]
"""``key=value`` overrides of the demo preset that make a pretraining step take a fraction of a second on a CPU."""


def tiny_config(*extra: str) -> Config:
    """The demo preset with ``TINY_OVERRIDES``, then ``extra`` overrides."""
    return load_config("demo", [*TINY_OVERRIDES, *extra])


def free_port() -> int:
    """A TCP port on localhost that is free now (for MASTER_PORT of a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensors_equal(a, b, where: str = "") -> None:
    """Recursive torch.equal over nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def png_header(path: Path, width: int, height: int) -> Path:
    """``path`` made a PNG of a few bytes whose header claims ``width`` x ``height`` grey pixels: a decompression
    bomb for every image reader's bomb check."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path
