"""Step-indexed batch streams, shared by pretraining and the dense fine-tunes, and their loader workers' set-up.

Exact resume and "the same batches for any number of DataLoader workers" both follow from one rule: the batch
of step ``s`` is a pure function of ``(seed, s, rank)``. A stream therefore makes whole batches by step number,
each worker taking every K-th step, and it reads items in an endless sequence of per-epoch permutations that is
itself a function of ``(seed, epoch)`` only.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info


class StepStream(IterableDataset):
    """Endless stream of whole batches from ``start_step``; use with ``DataLoader(batch_size=None)``.

    Worker ``w`` of ``K`` makes steps ``start_step + w + k*K``, so the loader's round-robin order yields steps
    ``start_step, start_step + 1, ...`` for any ``K``. Subclasses set ``start_step`` and define ``batch(step)``.
    A batch is made on one torch thread, as in a worker (``one_thread``): with no workers it is made in the main
    process, whose several threads round some resizes differently (segmentation's bilinear crops did), and the
    batches must not depend on ``num_workers``.
    """

    start_step: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + worker
        while True:
            with _one_torch_thread():
                batch = self.batch(step)
            yield batch  # the main process trains on all its threads again
            step += workers

    def batch(self, step: int) -> dict[str, Any]:
        raise NotImplementedError


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class EpochShuffle:
    """Position -> ``(item, epoch)`` in the endless sequence of per-epoch permutations of ``count`` items.

    Epoch ``e``'s permutation is drawn from ``(seed, e)`` alone; the last two are cached, since a batch can
    straddle an epoch boundary.
    """

    def __init__(self, seed: int, count: int) -> None:
        self.seed, self.count = seed, count
        self._orders: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> tuple[int, int]:
        epoch, within = divmod(position, self.count)
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.count)
        return int(self._orders[epoch][within]), epoch


def one_thread(_: int | None = None) -> None:
    """Worker set-up (``worker_init_fn``, pre-scan workers): decode and crop in one thread each, since K workers
    already use K cores (OpenCV runs on one thread in every process, see vito.data.augment; setting that here,
    after the fork, is what could deadlock)."""
    torch.set_num_threads(1)
