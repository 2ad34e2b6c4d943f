"""The MLP heads of BYOL/MoCLR: the projector (after pooling) and the online-only predictor."""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Linear (projector 3072 -> 4096 -> 256, predictor 256 -> 4096 -> 256).

    The shape and the batch norm in the hidden layer follow BYOL/MoCLR (docs/pretraining.md).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )
        self.in_dim, self.out_dim = in_dim, out_dim
