"""Helpers for curation tests: synthetic solid-colour videos and a classifier whose predictions we control."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

# Mean-colour classifier: the dominant channel of the (normalised) image decides the ImageNet class.
RED_CLASS, GREEN_CLASS, BLUE_CLASS = 968, 805, 89  # cup, soccer ball, sulphur-crested cockatoo
COLOURS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}


class MeanColourNet(nn.Module):
    """Predicts cup for red images, soccer ball for green, cockatoo for blue (confidence ~1)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("classes", torch.tensor([RED_CLASS, GREEN_CLASS, BLUE_CLASS]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dominant = images.mean(dim=(2, 3)).argmax(dim=1)
        logits = torch.zeros(len(images), 1000)
        logits[torch.arange(len(images)), self.classes[dominant]] = 20.0
        return logits


def write_colour_video(path: Path, colours: Sequence[str], fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 video with one solid-colour frame per entry of ``colours`` (duration = len / fps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps)}
        for name in colours:
            frame = np.empty((size[1], size[0], 3), np.uint8)
            frame[:] = COLOURS[name]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def colour_net() -> MeanColourNet:
    return MeanColourNet()
