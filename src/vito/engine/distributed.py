"""Several processes, one model: torchrun set-up, gathering keys, DDP and synchronised batch norm.

One code path for 1 or K processes: with a single process every helper here is the identity, so the loop
never branches on the world size. Launch K processes with ``torchrun --nproc-per-node K -m vito pretrain``.
"""

from __future__ import annotations

import datetime
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

# The differentiable all-reduce of torch.distributed.nn is deprecated in favour of private functional
# collectives; it is still the only public one whose backward all-reduces gradients, so keep it, quietly.
warnings.filterwarnings("ignore", message=r".*distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)


@dataclass(frozen=True)
class Context:
    """Where this process sits: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """The rank torchrun gave this process (``RANK``); 0 without torchrun. Valid before and after ``setup``."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto") -> Context:
    """Join the process group described by torchrun's RANK/WORLD_SIZE/LOCAL_RANK (if any).

    gloo on CPU, nccl on CUDA. Without torchrun variables this is a single process and nothing is set up.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if target.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=30),
        )
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_keys(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' keys concatenated in rank order, and where this process's keys start.

    Keys come from the EMA target network and are stop-gradient, so a plain (non-differentiable)
    ``all_gather`` is enough: no gradient ever has to flow back to another process through them.
    The offset tells the loss which global key is the positive of each local query.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return keys, 0
    keys = keys.detach().contiguous()
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys)
    return torch.cat(parts), dist.get_rank() * keys.shape[0]


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (for logging and for agreeing on when to stop)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every process (any picklable object): how rank 0 shares a decision it took alone."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(values: list[Any]) -> list[Any]:
    """Every process's list (any picklable items), concatenated in rank order; the list itself for one process.
    How evaluations split over processes put their per-item outputs (predictions, skipped items) back together."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return [value for part in parts for value in part]


def worker_count(configured: int) -> int:
    """DataLoader workers to start: at most the CPUs this process may run on (its affinity, which SLURM and
    taskset set), split among the processes of this host (``LOCAL_WORLD_SIZE``); never 0 when workers were
    asked for. More workers than cores only make every one of them slower (and DataLoader warns)."""
    if configured == 0:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(configured, per_process)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose batch statistics cover the batches of all processes, on any device.

    ``nn.SyncBatchNorm`` only runs on CUDA ("expected input tensor to be on GPU"); this one all-reduces the
    per-channel sum and count, then the per-channel sum of squared deviations, with the differentiable
    ``torch.distributed.nn.functional.all_reduce``: its backward all-reduces the gradients of the
    statistics, so each process gets the gradient of the *global* loss, exactly as one process holding the
    whole batch would. (Two reductions instead of one sum-of-squares: the centred form avoids the
    cancellation in E[x²] - E[x]², so results match a single process to float precision.)
    Works for [N, C] and [N, C, *spatial] inputs; without a process group it is ordinary batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype = x.dtype
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # float32 statistics under autocast
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = dist_fn.all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.reshape(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.detach())
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every batch norm by a synchronised one: ``nn.SyncBatchNorm`` on CUDA, ours elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        sync = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                sync.weight = module.weight
                sync.bias = module.bias
        if module.track_running_stats:
            sync.running_mean = module.running_mean
            sync.running_var = module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def wrap_for_training(model: nn.Module, context: Context) -> nn.Module:
    """With several processes: synchronised batch norm, then DDP (gradient averaging) around the model.

    DDP only averages parameters that require gradients: the online network and the predictor. The EMA
    target's parameters are frozen and move by ``update_target`` on every process identically.
    Returns the model itself for a single process.
    """
    if context.world_size == 1:
        return model
    convert_sync_batchnorm(model, context.device)
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **_no_buffer_sync())


def _no_buffer_sync() -> dict[str, bool]:
    """Buffers (batch-norm statistics) are identical on every process by construction: no per-step broadcast.

    Newer PyTorch renamed DDP's ``broadcast_buffers`` to ``forward_sync_buffers`` and warns on the old name.
    """
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
