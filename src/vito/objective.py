"""VITO's contrastive objective: InfoNCE between online predictions and target projections of other views.

For an ordered pair of views (i, j), the online prediction of view i of clip b must pick out the target
projection of view j of the *same* clip among the view-j target projections of every clip in the global
batch (spec §10). The multi-view loss sums over all ordered pairs i != j. Negatives are other clips only:
never other views of the same clip.

``gather`` makes the same code run on one or many processes: it all-gathers the local target keys
``[B, D]`` along dim 0 and returns ``(global_keys, offset)``, the offset being the row of this process's
first clip in the global batch. Gradients do not need to flow through it (targets are stop-gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def identity_gather(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Single-process gather: the local keys are the global batch."""
    return keys, 0


def info_nce(q: torch.Tensor, k_global: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """Mean over the local batch of ``-log softmax(q_b . k / t)[offset + b]``, on l2-normalised vectors.

    ``q``: local queries ``[B, D]``; ``k_global``: keys of the global batch ``[G, D]`` whose rows
    ``offset .. offset + B - 1`` are the positives of ``q``. Computed in fp32.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k_global.float(), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels)


def multiview_info_nce(
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    temperature: float,
    gather: Gather = identity_gather,
) -> torch.Tensor:
    """``sum over ordered pairs i != j of info_nce(queries[i], gather(keys[j]))``.

    ``queries[v]``: online predictions of view v ``[B, D]``; ``keys[v]``: target projections of view v.
    All views' keys are gathered in one call (concatenated along features) to pay one communication.
    """
    if len(queries) != len(keys) or len(queries) < 2:
        raise ValueError(f"need the same number (>= 2) of query and key views, got {len(queries)} and {len(keys)}")
    dim = keys[0].shape[1]
    global_keys, offset = gather(torch.cat([k.detach() for k in keys], dim=1))
    global_views = global_keys.split(dim, dim=1)
    return sum(
        info_nce(queries[i], global_views[j], temperature, offset)
        for i in range(len(queries))
        for j in range(len(keys))
        if i != j
    )
