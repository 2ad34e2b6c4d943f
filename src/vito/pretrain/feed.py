"""The training loop's input: the DataLoader of this process's batches, the batches with their views on the
training device, one batch ahead, and how long the loop waited for the loader (whether a run is input-bound).

On CUDA, the next batch is copied from pinned memory (the DataLoader pins it in its own thread) on a side
stream, and for ``data.decode_device=cuda`` decoded and cropped there too, while the device still computes
the current step; the step then waits for that stream only, not the host. On CPU it is a pass-through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vito.config import Config
from vito.data.gpu_decode import JpegBatches, decode_views
from vito.data.pretrain_batches import build_pretrain_loader
from vito.engine import distributed, signals
from vito.errors import DataError


def pretrain_loader(config: Config, data: Path, context: distributed.Context, start_step: int, notes: list[str],
                    decode: str = "cpu", scan_cache: Path | None = None) -> DataLoader:
    """DataLoader of this rank's batches from ``start_step``; opening it checks the data has a usable video.

    Workers are capped at the CPUs available to this process (shared by the processes of this host), and
    leave stop signals to the main process (:mod:`vito.engine.signals`).
    """
    workers = distributed.worker_count(config.data.num_workers)
    if workers < config.data.num_workers:
        notes.append(f"data.num_workers={config.data.num_workers}, but this process has {workers} CPU(s) "
                     f"to itself: using {workers} DataLoader worker(s)")
    data_cfg = dataclasses.replace(config.data, num_workers=workers)
    loader = build_pretrain_loader(data, data_cfg, config.train.seed, rank=context.rank,
                                   world_size=context.world_size, start_step=start_step, scan_cache=scan_cache,
                                   batches=JpegBatches if decode == "cuda" else None)
    _check_negatives(config, len(loader.dataset.usable))
    loader.pin_memory = context.device.type == "cuda"  # the feed copies batches from pinned memory
    loader.worker_init_fn = functools.partial(_init_worker, loader.worker_init_fn)
    return loader


def _check_negatives(config: Config, usable: int) -> None:
    """With same-video clips masked, a clip's negatives are the other videos of the batch: fewer than 2 usable
    videos can never train (a batch of 1 clip is refused by the config). Said at start, before the run folder is
    touched, not as a DataError at step 0 after the folder was written or --overwrite removed the previous run."""
    if config.loss.mask_same_video and usable < 2:
        raise DataError(f"the data holds {usable} usable video(s): a clip's negatives are the other videos of its "
                        "batch (loss.mask_same_video=true), so at least 2 are needed; add videos, or set "
                        "loss.mask_same_video=false to take the other clips of the same video as negatives")


def _init_worker(init: Callable[[int], None] | None, worker_id: int) -> None:
    signals.ignore_stop_signals_in_worker(worker_id)
    if init is not None:
        init(worker_id)


class DeviceFeed:
    """``take()`` the current batch; ``prefetch()`` the next one once the current step's work is queued."""

    def __init__(self, batches: Iterator[dict[str, Any]], device: torch.device, image_size: int, decode: str):
        self.batches, self.device, self.image_size, self.decode = batches, device, image_size, decode
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None
        self.waited = 0.0  # seconds spent waiting for the loader, summed until the caller resets it
        self._next: dict[str, Any] | None = None

    def prefetch(self) -> None:
        """Take the next batch from the loader (its wait is counted) and start moving it to the device."""
        start = time.perf_counter()
        batch = next(self.batches)
        self.waited += time.perf_counter() - start
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            if self.decode == "cuda":
                batch["views"] = decode_views(batch, self.image_size, self.device)
            else:
                batch["views"] = batch["views"].to(self.device, non_blocking=True)
            batch["video_index"] = batch["video_index"].to(self.device, non_blocking=True)
        self._next = batch

    def take(self) -> dict[str, Any]:
        """The prefetched batch (fetched now if there is none), usable on the current stream."""
        if self._next is None:
            self.prefetch()
        batch, self._next = self._next, None
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for key in ("views", "video_index"):  # allocated on the side stream, used on this one
                batch[key].record_stream(current)
        return batch


class StepTimer:
    """Device time of one step from CUDA events (read at a log step, when the loop syncs anyway); ``None``
    on CPU, where the host's wall time is the step time."""

    def __init__(self, device: torch.device):
        self.events = None
        if device.type == "cuda":
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.events[0].record()

    def stop(self) -> None:
        if self.events is not None:
            self.events[1].record()

    def seconds(self) -> float | None:
        if self.events is None:
            return None
        self.events[1].synchronize()
        return self.events[0].elapsed_time(self.events[1]) / 1000.0
