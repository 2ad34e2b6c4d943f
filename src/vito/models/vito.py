"""The VITO model: an online network trained to predict an EMA target network's view of other frames.

``VitoNetwork`` = encoder -> multi-scale attention pooling -> projector (paper §3.1). ``Vito`` holds the
online network with its predictor and the target network, an exponential moving average of the online
one (BYOL/MoCLR), and computes the multi-view InfoNCE loss of a batch of clips.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import nn

from vito.config import Config, LossConfig, ModelConfig
from vito.models.backbones import create_backbone
from vito.models.heads import MLPHead
from vito.models.pooling import MultiScalePool
from vito.objective import Gather, identity_gather, multiview_info_nce


class VitoOutput(NamedTuple):
    projection: torch.Tensor  # [N, projector_dim]
    pooled: torch.Tensor  # [N, sum of stage channels]
    masks: list[torch.Tensor]  # per stage [N, h, w], each summing to 1


class VitoNetwork(nn.Module):
    """Encoder + multi-scale (attention) pooling + projector: one branch of VITO."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = create_backbone(config.backbone, config.stages)
        self.pool = MultiScalePool(self.backbone.channels, config.attention, config.attention_hidden)
        self.projector = MLPHead(self.pool.out_dim, config.projector_hidden, config.projector_dim)

    def forward(self, images: torch.Tensor) -> VitoOutput:
        pooled, masks = self.pool(self.backbone(images))
        return VitoOutput(self.projector(pooled), pooled, masks)

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Where the network looks: one ``[B, h, w]`` mask per pooled stage, for any image size.

        Skips the projector, whose batch norm would need a batch; uniform masks without attention.
        """
        return self.pool(self.backbone(images))[1]


class Vito(nn.Module):
    """Online network + predictor, EMA target network, and the multi-view InfoNCE loss."""

    def __init__(self, model: ModelConfig, loss: LossConfig) -> None:
        super().__init__()
        self.online = VitoNetwork(model)
        dim = model.projector_dim
        self.predictor = MLPHead(dim, model.projector_hidden, dim) if model.predictor else nn.Identity()
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.temperature = loss.temperature
        self.mask_same_video = loss.mask_same_video
        self.negatives = loss.negatives

    def forward(
        self, views: torch.Tensor, video_index: torch.Tensor | None = None, gather: Gather = identity_gather
    ) -> dict[str, torch.Tensor | list]:
        """``views [B, V, 3, H, W]`` (normalised) -> ``{"loss", "mask_entropy"}``.

        ``video_index [B]``: the video of each clip; with ``loss.mask_same_video`` other clips of the same
        video are not negatives (see ``vito.objective``). None: every clip is its own video.

        All B*V images go through each network as one batch (one big batch runs faster than V small ones);
        ``mask_entropy[s]`` is the mean entropy of stage s's online masks divided by its maximum log(h*w):
        1 = uniform (no attention), 0 = a single position.
        """
        batch, num_views = views.shape[:2]
        images = views.flatten(0, 1)  # clip-major: row b*V + v
        online = self.online(images)
        predictions = self.predictor(online.projection).view(batch, num_views, -1)
        with torch.no_grad():
            targets = self.target(images).projection.view(batch, num_views, -1)
        videos = video_index if self.mask_same_video else None
        loss = multiview_info_nce(predictions.unbind(1), targets.unbind(1), self.temperature, gather, videos,
                                  self.negatives)
        return {"loss": loss, "mask_entropy": [normalised_entropy(m.detach()) for m in online.masks]}

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """θ_target <- τ θ_target + (1 - τ) θ_online; buffers (batch-norm statistics) are copied."""
        target, online = list(self.target.parameters()), list(self.online.parameters())
        torch._foreach_lerp_(target, online, 1.0 - tau)
        torch._foreach_copy_(list(self.target.buffers()), list(self.online.buffers()))


def build_vito(config: Config) -> Vito:
    """The run's ``Vito`` at its initialisation: seeds torch with ``train.seed``, then builds the model, so the
    weights are a function of the config only and identical on every process (and in a resumed run)."""
    torch.manual_seed(config.train.seed)
    return Vito(config.model, config.loss)


def normalised_entropy(masks: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``H(mask) / log(h*w)`` for masks ``[B, h, w]``, in [0, 1]."""
    probs = masks.flatten(1).float()
    entropy = torch.special.entr(probs).sum(dim=1)  # -p log p, 0 where p = 0: one kernel
    return entropy.mean() / max(math.log(probs.shape[1]), 1e-12)
