"""How long one training step takes here, estimated at start, against the grace period a stop signal gets.

Why: a stop request (SIGTERM, SIGUSR1) is answered after the step in flight and a checkpoint. A scheduler
kills the job a grace period after its signal (30 s by default in SLURM, Kubernetes and torchrun), so a run
whose step takes longer than that is killed without its checkpoint, and loses every step since the last
periodic one. ``vito pretrain --config vito_r50`` on a CPU (4,096 clips of ResNet-50 at 224 px per step) runs
for many minutes after the signal. Measured once at start, the user learns this before the hours are spent.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch

from vito.config import Config

ESTIMATE_CLIPS = {"cpu": 2, "cuda": 32}  # clips of the timed step: a GPU needs a batch to reach its speed


def estimate_step_seconds(model: torch.nn.Module, config: Config, device: torch.device, per_rank_batch: int,
                          autocast: contextlib.AbstractContextManager) -> tuple[float, int]:
    """Seconds of one step of ``per_rank_batch`` clips, and the clips actually timed: one forward and backward
    of a few clips of random views through a copy of the model (after one untimed call that allocates),
    scaled linearly to the batch. The run's model, optimiser and random generators are not touched."""
    clips = min(per_rank_batch, ESTIMATE_CLIPS.get(device.type, 2))
    probe = copy.deepcopy(model).train()
    size = config.data.image_size
    views = torch.randn(clips, config.data.num_views, 3, size, size, generator=torch.Generator().manual_seed(0))
    views, videos = views.to(device), torch.arange(clips, device=device)
    seconds = 0.0
    for _ in range(2):  # the first call allocates (and on CUDA picks kernels): only the second is timed
        _synchronize(device)
        started = time.perf_counter()
        with autocast:
            loss = probe(views, video_index=videos)["loss"]
        loss.backward()
        _synchronize(device)
        seconds = time.perf_counter() - started
    return seconds * per_rank_batch / clips, clips


def grace_warning(config: Config, seconds: float, clips: int, per_rank_batch: int) -> str | None:
    """The warning for ``train.log`` when a step is estimated to outlast ``train.stop_grace_seconds``."""
    grace = config.train.stop_grace_seconds
    if grace <= 0 or seconds <= grace:
        return None
    return (f"one training step takes about {seconds:.0f} s here (a timed step of {clips} clip(s), scaled to "
            f"{per_rank_batch}): a stop signal is answered after the step in flight and a checkpoint, so the "
            f"scheduler's grace period must exceed that, more than train.stop_grace_seconds={grace:g}; use a "
            "smaller data.batch_size, more processes or a faster device, or lengthen the grace period "
            "(`vito docs cluster`)")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
