"""Temporal integration for UCF-101: per-frame features of an image encoder → one vector per clip → classes.

Three integrations of the per-frame stage features (paper §4, docs/metrics.md):

* ``avg``: average of the last stage (res5) over time                                  (2048-d for R50)
* ``ms-avg``: res4 averaged over each 1-s half, both halves concatenated with the clip average of res5
  (1024 + 1024 + 2048 = 4096-d)
* ``ms-attn``: as ``ms-avg`` with every average replaced by temporal attention ``v = Σ_t tanh(W z_t) z_t``
  (one ``W`` per scale).
"""

from __future__ import annotations

import torch
from torch import nn

from vito.errors import VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.dense.backbone import TrainableBackbone

POOLINGS = ("avg", "ms-avg", "ms-attn")


def pooled_stages(mode: str) -> list[int]:
    """The encoder stages a temporal pooling reads: the last (res5), or the last two (res4, res5)."""
    if mode not in POOLINGS:
        raise VitoError(f"pooling {mode!r} is not one of {list(POOLINGS)}")
    return [-1] if mode == "avg" else [-2, -1]


class TemporalAttention(nn.Module):
    """Weights over time from each frame's own feature.

    ``form="paper"``: ``w_t = tanh(W z_t)`` (W in R^{C×1}), ``v = Σ_t w_t z_t`` (VITO appendix).
    ``form="softmax"``: ``e_t = u^T tanh(W z_t)``, ``α = softmax_t(e)``, ``v = Σ_t α_t z_t`` (docs/metrics.md).
    """

    def __init__(self, channels: int, form: str = "paper", hidden: int | None = None) -> None:
        super().__init__()
        if form not in ("paper", "softmax"):
            raise VitoError(f"temporal attention form {form!r} is not 'paper' or 'softmax'")
        self.form = form
        self.proj = nn.Linear(channels, 1 if form == "paper" else (hidden or channels), bias=False)
        self.score = nn.Linear(hidden or channels, 1, bias=False) if form == "softmax" else None

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` weights for features ``[B, T, C]``."""
        if self.score is None:
            return torch.tanh(self.proj(z)).squeeze(-1)
        return self.score(torch.tanh(self.proj(z))).squeeze(-1).softmax(dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.weights(z).unsqueeze(-1) * z).sum(dim=1)


class TemporalPooling(nn.Module):
    """Per-frame stage features ``{"res4": [B, T, C4], "res5": [B, T, C5]}`` → one clip vector."""

    def __init__(self, mode: str, channels4: int, channels5: int) -> None:
        super().__init__()
        self.mode = mode
        self.stages = pooled_stages(mode)
        self.out_dim = channels5 if mode == "avg" else 2 * channels4 + channels5
        if mode == "ms-attn":
            self.attend4, self.attend5 = TemporalAttention(channels4), TemporalAttention(channels5)

    def forward(self, per_stage: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "avg":
            return per_stage[-1].mean(dim=1)
        res4, res5 = per_stage
        half = res4.shape[1] // 2
        halves = (res4[:, :half], res4[:, half:])
        if self.mode == "ms-avg":
            return torch.cat([halves[0].mean(1), halves[1].mean(1), res5.mean(1)], dim=1)
        return torch.cat([self.attend4(halves[0]), self.attend4(halves[1]), self.attend5(res5)], dim=1)


class VideoClassifier(nn.Module):
    """Backbone per frame → global average pool per stage → temporal pooling → dropout → linear classifier.

    The backbone is a trainable copy of the encoder (``TrainableBackbone``: the encoder itself stays as it was,
    and the copy has no unused parameters, which DDP refuses). ``frozen``: only the temporal head and the
    classifier learn, and the backbone stays in inference mode (its batch-norm statistics too). ``dropout``:
    the probability of zeroing each feature of the clip vector in training (AVID-CMA's ``ClassificationWrapper``
    puts its dropout there, before the classifier).
    """

    def __init__(self, encoder: Encoder, pooling: str, num_classes: int, frozen: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = TrainableBackbone(encoder, pooled_stages(pooling))
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        channels = self.backbone.channels
        self.pool = TemporalPooling(pooling, channels[0], channels[-1])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.pool.out_dim, num_classes)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``clips [B, T, 3, H, W]`` → logits ``[B, num_classes]``."""
        batch, frames = clips.shape[:2]
        maps = self.backbone(clips.flatten(0, 1))
        per_stage = [m.float().mean(dim=(2, 3)).view(batch, frames, -1) for m in maps]
        return self.fc(self.dropout(self.pool(per_stage)))
