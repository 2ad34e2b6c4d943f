"""The deterministic stream of batches fed to pretraining, and its DataLoader.

``PretrainBatches`` turns a source into batches whose content for step ``s`` on rank ``r`` is a pure function
of ``(seed, s, r)`` and the pre-scan: which videos (an epoch-wise seeded permutation of the usable videos
split across ranks), the view times and the crops. A clip whose file still fails (only at some times: a
partly corrupt file) is replaced for that slot only, by a rule of ``(seed, step, rank, slot)``, never by
what a worker has met before. Resuming at step ``s`` therefore continues exactly the same data stream, and
the number of DataLoader workers changes nothing. Bad files are reported and counted, never fatal, unless no
video is usable at all.

Still images (``ImageFolderSource``, or shards prepared from images) go through the same stream as one-frame
videos: the other images of the global batch are each image's negatives. They need ``data.sampling=same``
(``check_sampling``, before the pre-scan) and at least two usable images (one would be its own only negative).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vito.config import ConfigError, DataConfig
from vito.data.augment import RandomResizedCropFlip
from vito.data.prescan import cached_scan, no_usable_message, save_scan
from vito.data.sampling import sample_times
from vito.data.sources import ClipSource, Skip, TimesFn, located_reason, open_source, source_media
from vito.data.stream import EpochShuffle, StepStream, one_thread
from vito.errors import DataError, VitoError

log = logging.getLogger(__name__)

REPLACEMENT_STREAM = 1  # extra seed word: replacement draws never reuse the view/crop random stream


class PretrainBatches(StepStream):
    """Infinite stream of whole batches for one rank, starting at ``start_step``.

    Use with ``DataLoader(batch_size=None)``; workers split the steps as ``StepStream`` says.
    Batch: ``{"step": int, "views": uint8 [B, V, 3, S, S], "video_index": int64 [B],
    "skipped": [(name, reason), ...]}``: the clips that failed while making this batch, and in the batch of
    ``start_step`` also everything left out before (``skipped``: manifest rows, files and shards, and the
    videos the pre-scan found unusable), so that the training log counts them all.

    ``unusable``: the pre-scan's ``{index: reason}`` (``cached_scan``); those videos are never scheduled.
    """

    def __init__(
        self,
        source: ClipSource,
        data: DataConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        batch_size: int | None = None,
        unusable: dict[int, str] | None = None,
        skipped: Sequence[Skip] = (),
    ):
        if len(source) == 0:
            raise DataError("the data source holds no clips")
        check_sampling(source, data)
        unusable = unusable or {}
        self.usable = np.array([i for i in range(len(source)) if i not in unusable], dtype=np.int64)
        media = source_media(source)
        if self.usable.size == 0:
            raise DataError(no_usable_message(len(source), [unusable[i] for i in sorted(unusable)], media))
        if media == "images" and self.usable.size < 2:
            reasons = "; ".join(unusable[i] for i in sorted(unusable)[:5])
            raise DataError(f"only 1 usable image among {len(source)} files: contrastive pretraining needs at "
                            f"least two (the other images of a batch are an image's negatives)"
                            + (f"; unusable: {reasons}" if reasons else ""))
        self.source, self.data, self.seed = source, data, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.batch_size = batch_size if batch_size is not None else data.batch_size // world_size
        self.crop = RandomResizedCropFlip(data.image_size, scale=(data.crop_min_scale, 1.0))
        self.unusable = dict(unusable)
        self.skipped = list(skipped) + [(source.name(i), unusable[i]) for i in sorted(unusable)]
        self._shuffle = EpochShuffle(seed, len(self.usable) * data.clips_per_video)

    def save_scan(self, folder: Path) -> None:
        """Keep this stream's pre-scan in the run ``folder``, for ``build_pretrain_loader(scan_cache=folder)``."""
        save_scan(folder, self.source, self.unusable)

    # The schedule: pure functions of (seed, step, rank, slot) and the pre-scan

    def video_for(self, step: int, slot: int) -> int:
        """The video at a position of the infinite, epoch-wise shuffled sequence of usable videos, split
        across ranks."""
        position = (step * self.world_size + self.rank) * self.batch_size + slot
        item, _ = self._shuffle(position)
        return int(self.usable[item % len(self.usable)])

    def candidates(self, step: int, slot: int) -> Iterator[int]:
        """The scheduled video, then its replacements should a read fail: every other usable video once,
        from a start drawn from (seed, step, rank, slot). Never what a worker has met before, so the batch
        is the same for any number of workers and after a resume."""
        scheduled = self.video_for(step, slot)
        yield scheduled
        count = len(self.usable)
        first = int(np.random.default_rng([self.seed, step, self.rank, slot, REPLACEMENT_STREAM]).integers(count))
        for k in range(count):
            index = int(self.usable[(first + k) % count])
            if index != scheduled:
                yield index

    def batch(self, step: int) -> dict[str, Any]:
        size = self.data.image_size  # crops are resized straight into one preallocated [B, V, S, S, 3] array
        views = np.empty((self.batch_size, self.data.num_views, size, size, 3), dtype=np.uint8)
        indices = []
        skipped = list(self.skipped) if step == self.start_step else []
        for slot in range(self.batch_size):
            rng = np.random.default_rng([self.seed, step, self.rank, slot])
            index, frames = self._first_readable(step, slot, rng, skipped)
            for frame, out in zip(frames.numpy(), views[slot]):
                self.crop.crop_into(frame, rng, out)
            indices.append(index)
        return {
            "step": step,
            "views": torch.from_numpy(views).permute(0, 1, 4, 2, 3),  # [B, V, 3, S, S], channels-last memory
            "video_index": torch.tensor(indices, dtype=torch.int64),
            "skipped": skipped,
        }

    def _read(self, index: int, times_fn: TimesFn) -> Any:
        """What a slot takes from its clip: decoded frames (``vito.data.gpu_decode`` reads undecoded JPEGs)."""
        return self.source.read_clip(index, times_fn, self.data.decode_short_side)

    def _first_readable(
        self, step: int, slot: int, rng: np.random.Generator, skipped: list[Skip]
    ) -> tuple[int, torch.Tensor]:
        """Read the scheduled clip, or the first of its ``candidates`` that reads (a file that passed the
        pre-scan may still fail at some times: a partly corrupt file). Each attempt draws the same times
        and crops."""
        d = self.data
        state = rng.bit_generator.state

        def times_fn(duration: float) -> np.ndarray:
            return sample_times(duration, d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng)

        reasons = []
        for index in self.candidates(step, slot):
            rng.bit_generator.state = state
            try:
                return index, self._read(index, times_fn)
            except DataError as exc:
                reasons.append(str(exc))
                skipped.append((self.source.name(index), located_reason(self.source, index, str(exc))))
                log.debug("skipping %s", exc)
        raise DataError(no_usable_message(len(self.usable), reasons, source_media(self.source)))


def check_sampling(source: ClipSource, data: DataConfig, where: str | Path | None = None) -> None:
    """A ``ConfigError`` naming ``data.sampling`` when it draws views at different times from still images,
    which have one time only: silently cutting every view from the one frame would train another method."""
    if source_media(source) == "images" and data.sampling != "same":
        held = f"{where} holds" if where is not None else "the data are"
        raise ConfigError(f"data.sampling={data.sampling} draws the views of a clip at different times, but {held} "
                          "still images (one frame each): use data.sampling=same, as the moclr_r50 preset does "
                          "(the paper's MoCLR image baseline)")


# --------------------------------------------------------------------------------------------------
# Loader and skip accounting


def build_pretrain_loader(
    data_path: str | Path,
    data_cfg: DataConfig,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    scan_cache: Path | None = None,
    batches: type[PretrainBatches] | None = None,
) -> DataLoader:
    """DataLoader of whole per-rank batches (global ``batch_size`` / ``world_size`` clips) from ``start_step``.

    Raw videos are pre-scanned first; ``scan_cache``: the folder of a resumed run, whose saved answer is
    used instead (``cached_scan``). Nothing is written here: the loop saves the answer with
    ``loader.dataset.save_scan(run_dir)`` once the run folder is its own. ``batches`` replaces
    ``PretrainBatches`` (``vito.data.gpu_decode.JpegBatches``: views decoded on the training device).
    """
    if data_cfg.batch_size % world_size:
        raise VitoError(f"data.batch_size={data_cfg.batch_size} is not divisible by the {world_size} processes")
    source = open_source(data_path)
    check_sampling(source, data_cfg, data_path)  # before the pre-scan: minutes on a large image folder
    skipped = list(getattr(source, "skipped", ()))
    if len(source) == 0:
        raise DataError(no_usable_message(0, [reason for _, reason in skipped], source_media(source)) if skipped
                        else f"{data_path}: holds no clips")
    unusable = cached_scan(source, scan_cache, data_cfg.num_workers, rank, world_size)
    dataset = (batches or PretrainBatches)(source, data_cfg, seed, rank, world_size, start_step,
                                           data_cfg.batch_size // world_size, unusable=unusable, skipped=skipped)
    workers = data_cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=one_thread if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


class SkipCounter:
    """The unusable videos met in ``batch["skipped"]`` so far, each counted once (by name), with its reason."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # name -> reason

    def update(self, skipped: Sequence[tuple[str, str]]) -> list[str]:
        """Count the videos of ``skipped`` not met before; returns their reasons, for the caller's log."""
        new = []
        for name, reason in skipped:
            if name not in self.names:
                self.names[name] = reason
                new.append(reason)
        return new

    @property
    def total(self) -> int:
        return len(self.names)

    def by_reason(self) -> dict[str, int]:
        """Counts per kind of failure (the reason text after the file name, e.g. 'empty file (0 bytes)')."""
        return dict(Counter(_kind(name, reason) for name, reason in self.names.items()))


def _kind(name: str, reason: str) -> str:
    text = reason[len(name) + 2 :] if reason.startswith(name + ": ") else reason
    return text.split(" (")[0]
