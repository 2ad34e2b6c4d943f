"""Spatial pooling of feature maps into vectors: VITO's attention pooling and plain global averaging.

Attention pooling (paper §3.1) lets the network choose *where* to look: a small MLP scores every position,
a softmax over positions turns scores into a mask, and the pooled vector is the mask-weighted sum of
features. Both poolings return ``(pooled [B, C], mask [B, H, W])`` so the rest of the code, and the
attention pictures, never care which one is in use (average pooling's mask is uniform).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def weighted_sum(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_ij mask[b,i,j] * features[b,:,i,j]`` -> ``[B, C]``; one batched matrix product.

    ``features.flatten(2)`` is a view for channels_last maps too (their H and W stay adjacent), so no copy.
    """
    weights = mask.flatten(1).to(features.dtype).unsqueeze(2)  # [B, HW, 1]
    return torch.bmm(features.flatten(2), weights).squeeze(2)


class AttentionPool(nn.Module):
    """Softmax attention over positions, scored by a 2-layer MLP applied at each position.

    The MLP runs as ``nn.Linear`` layers on the ``[B, H, W, C]`` view of the map: for the channels_last maps
    of training that view is contiguous, so each layer is one plain matrix product over all positions, with
    no copy (1x1 convolutions compute the same thing but reorder their weights in every backward pass). The
    softmax is computed in fp32 even under bf16 autocast: masks of large maps have tiny entries that bf16
    would round away.
    """

    def __init__(self, channels: int, hidden: int = 0) -> None:
        super().__init__()
        hidden = hidden or channels  # default width = the stage's channel width (docs/pretraining.md)
        self.score = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
        self.register_load_state_dict_pre_hook(_conv_weights_as_linear)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.score(features.permute(0, 2, 3, 1)).squeeze(3)  # [B, H, W]
        mask = logits.flatten(1).float().softmax(dim=1).view_as(logits)
        return weighted_sum(features, mask), mask


def _conv_weights_as_linear(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Loads checkpoints written when the scoring MLP was 1x1 convolutions: ``[out, in, 1, 1]`` -> ``[out, in]``."""
    for key in (f"{prefix}score.0.weight", f"{prefix}score.2.weight"):
        if key in state_dict and state_dict[key].ndim == 4:
            state_dict[key] = state_dict[key].flatten(1)


class AveragePool(nn.Module):
    """Global average pooling with the same interface as ``AttentionPool`` (a uniform mask)."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        mask = features.new_full((batch, height, width), 1.0 / (height * width), dtype=torch.float32)
        return features.mean(dim=(2, 3)), mask


class MultiScalePool(nn.Module):
    """Pools each stage's map separately and concatenates the vectors: ``[y_1, y_2]`` (3072-d for res4+res5)."""

    def __init__(self, channels: Sequence[int], attention: bool = True, hidden: int = 0) -> None:
        super().__init__()
        self.pools = nn.ModuleList(AttentionPool(c, hidden) if attention else AveragePool() for c in channels)
        self.out_dim = sum(channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pooled, masks = zip(*(pool(m) for pool, m in zip(self.pools, maps, strict=True)))
        return torch.cat(pooled, dim=1), list(masks)
