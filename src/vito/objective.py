"""VITO's contrastive objective: InfoNCE between online predictions and target projections of other views.

For an ordered pair of views (i, j), the online prediction of view i of clip b must pick out the target
projection of view j of the *same* clip among the view-j target projections of every clip in the global
batch (the paper's eq. 3, docs/pretraining.md). The multi-view loss sums over all ordered pairs i != j.

Which keys are negatives (``loss.negatives``):

* ``cross_view`` (default, eq. 3): the other clips' view-j target projections (B - 1 per query);
* ``cross_and_same_view``: those and the other clips' view-i target projections, the query's own view
  (2B - 2 per query), as DetCon's ``byol_nce_detcon`` does for two views (its ``logits_aa`` block, with the
  query's own same-view key masked out).

Negatives are other *videos* only (docs/pretraining.md): never other views of the same clip, and, given each
clip's ``video_index``, never clips of the same video either (two clips of one video are in a batch whenever
the batch exceeds the number of videos or ``data.clips_per_video`` > 1); their keys leave the softmax
denominator in both negative sets. ``loss.mask_same_video: false`` keeps them as negatives (an ablation).

``gather`` makes the same code run on one or many processes: it all-gathers a local tensor along dim 0
(the target keys ``[B, D]``, and the video indices ``[B]`` int64 as a tensor of their own, so they are never
rounded to a low-precision key dtype) and returns ``(global, offset)``, the offset being the row of this
process's first clip in the global batch. Gradients do not need to flow through it (targets are
stop-gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vito.errors import DataError

Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]
NEGATIVE_SETS = ("cross_view", "cross_and_same_view")


def identity_gather(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Single-process gather: the local keys are the global batch."""
    return keys, 0


def info_nce(
    q: torch.Tensor, k_global: torch.Tensor, temperature: float, offset: int = 0, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the local batch of ``-log softmax(q_b . k / t)[offset + b]``, on l2-normalised vectors.

    ``q``: local queries ``[B, D]``; ``k_global``: keys of the global batch ``[G, D]`` whose rows
    ``offset .. offset + B - 1`` are the positives of ``q``. ``excluded``: bool ``[B, G]``, keys left out of
    query b's denominator (see ``same_video_negatives``; never the positive). Computed in fp32.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k_global.float(), dim=1)
    logits = q @ k.T / temperature
    if excluded is not None:
        logits = logits.masked_fill(excluded, -math.inf)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels)


def same_video_negatives(video_index: torch.Tensor, global_video_index: torch.Tensor, offset: int) -> torch.Tensor:
    """bool ``[B, G]``: True where global key g shows the same video as local clip b but is not its positive.

    A batch holding fewer than 2 distinct videos has no negatives at all: a DataError, not a loss of 0.
    """
    if torch.unique(global_video_index).numel() < 2:
        raise DataError(
            f"the batch of {global_video_index.numel()} clips holds fewer than 2 distinct videos, so no clip has a "
            "negative: use more videos or a larger batch, or set loss.mask_same_video=false"
        )
    same = video_index.reshape(-1, 1) == global_video_index.reshape(1, -1)
    rows = torch.arange(video_index.numel(), device=same.device)
    same[rows, rows + offset] = False
    return same


def multiview_info_nce(
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    temperature: float,
    gather: Gather = identity_gather,
    video_index: torch.Tensor | None = None,
    negatives: str = "cross_view",
) -> torch.Tensor:
    """``sum over ordered pairs i != j of info_nce(queries[i], keys of the pair)``.

    ``queries[v]``: online predictions of view v ``[B, D]``; ``keys[v]``: target projections of view v.
    All views' keys are gathered in one call (concatenated along features) to pay one communication.
    ``video_index`` (int ``[B]``, the video of each local clip): given, keys of other clips of the same
    video are no negatives; None, every clip counts as its own video. ``negatives``: ``cross_view`` (the
    global view-j keys) or ``cross_and_same_view`` (those, then the global view-i keys without the query's
    own), see the module docstring.
    """
    if len(queries) != len(keys) or len(queries) < 2:
        raise ValueError(f"need the same number (>= 2) of query and key views, got {len(queries)} and {len(keys)}")
    if negatives not in NEGATIVE_SETS:
        raise ValueError(f"negatives {negatives!r} is not one of {NEGATIVE_SETS}")
    dim = keys[0].shape[1]
    global_keys, offset = gather(torch.cat([k.detach() for k in keys], dim=1))
    global_views = global_keys.split(dim, dim=1)
    excluded = None
    if video_index is not None:
        local = video_index.to(device=global_keys.device, dtype=torch.int64)
        global_videos, video_offset = gather(local)
        if video_offset != offset:
            raise ValueError(f"keys and video indices gathered to different offsets ({offset} != {video_offset})")
        excluded = same_video_negatives(local, global_videos, offset)
    if negatives == "cross_view":
        return sum(info_nce(queries[i], global_views[j], temperature, offset, excluded)
                   for i in range(len(queries)) for j in range(len(keys)) if i != j)
    own = _own_keys(queries[0].shape[0], global_keys.shape[0], offset, global_keys.device)
    cross = excluded if excluded is not None else torch.zeros_like(own)
    same = own if excluded is None else own | excluded
    masks = torch.cat([cross, same], dim=1)  # [B, 2G] over the view-j keys, then the view-i keys
    return sum(info_nce(queries[i], torch.cat([global_views[j], global_views[i]]), temperature, offset, masks)
               for i in range(len(queries)) for j in range(len(keys)) if i != j)


def _own_keys(local: int, total: int, offset: int, device: torch.device) -> torch.Tensor:
    """bool ``[B, G]``: True at each local clip's own row of the global batch."""
    own = torch.zeros(local, total, dtype=torch.bool, device=device)
    rows = torch.arange(local, device=device)
    own[rows, rows + offset] = True
    return own
