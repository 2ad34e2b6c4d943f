"""UCF-101's data: the official split files, the 2-second clips of a video, and the training batches by step.

A clip is 2 s of video at 12 fps (24 frames), every frame given the same crop, flip and (with the CycleContrast
recipe) colour jitter. Training takes ``clips_per_video`` random clips of every video per epoch (each video
stands ``clips_per_video`` times in the epoch's permutation, as AVID-CMA's clip-mode dataset of ``videos x
clips_per_video`` samples); testing takes ``test_clips`` clips whose start times are spread uniformly over the
video. The clip of video ``i``'s draw ``d`` (its ``d``-th clip of the run) is a function of ``(seed, d, i)``
alone, and :class:`TrainingClips` makes the batch of step ``s`` a function of ``(seed, s)`` alone (the
step-indexed stream of the fine-tunes, ``vito.data.stream``), so a stopped fine-tune resumes exactly where it
stopped, on any number of processes and DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vito.data.augment import RandomResizedCropFlip
from vito.data.imagenet import CROP_FRACTION, normalize
from vito.data.stream import EpochShuffle, StepStream
from vito.data.video import probe_video, read_frames
from vito.errors import DataError, VitoError
from vito.eval.core.inputs import EvalTransform
from vito.io import inside_name, read_text

log = logging.getLogger(__name__)

CLIP_SECONDS, CLIP_FPS = 2.0, 12.0
CLIP_FRAMES = int(round(CLIP_SECONDS * CLIP_FPS))  # 24
TRAIN_CROP_SCALE = (0.08, 1.0)


# --------------------------------------------------------------------------------------------------
# Official split files


@dataclass(frozen=True)
class VideoEntry:
    path: str  # relative to the UCF-101 root, e.g. "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    label: int  # 0-based


def read_class_names(splits_dir: str | Path) -> list[str]:
    """``classInd.txt`` (``<1-based id> <ClassName>``, CRLF) as a list indexed by 0-based label."""
    path = Path(splits_dir) / "classInd.txt"
    if not path.is_file():
        raise DataError(f"UCF-101 class index not found: {path}")
    names: dict[int, str] = {}
    for number, line in enumerate(read_text(path, "UCF-101 class index").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1 or int(parts[0]) - 1 in names:
            raise DataError(f"{path} line {number}: {line.strip()!r} is not '<1-based id> <ClassName>' with a new id")
        names[int(parts[0]) - 1] = parts[1]
    if not names or sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: the class ids must be 1..N without gaps (found {len(names)} classes)")
    return [names[i] for i in range(len(names))]


def read_split(splits_dir: str | Path, split: int, subset: str) -> list[VideoEntry]:
    """Videos of ``trainlist0{split}.txt`` or ``testlist0{split}.txt``.

    Test lines carry no label: it comes from the folder name, matched case-insensitively because the
    official files name ``HandstandPushups/v_HandStandPushups_...``.
    """
    if subset not in ("train", "test") or split not in (1, 2, 3):
        raise VitoError(f"UCF-101 has splits 1-3 with subsets train/test, not split {split} {subset!r}")
    names = read_class_names(splits_dir)
    by_folder = {name.lower(): i for i, name in enumerate(names)}
    path = Path(splits_dir) / f"{subset}list0{split}.txt"
    if not path.is_file():
        raise DataError(f"UCF-101 split file not found: {path}")
    entries, seen = [], set()
    for number, line in enumerate(read_text(path, "UCF-101 split file").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        inside_name(parts[0], f"{path} line {number}", subfolders=True)
        folder = parts[0].split("/")[0].lower()
        if folder not in by_folder:
            raise DataError(f"{path}: class folder {folder!r} is not in classInd.txt")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise DataError(f"{path} line {number}: {line.strip()!r} is not '<Class>/<video> [<1-based label>]'")
        if parts[0] in seen:  # a video listed twice would be trained on or scored twice
            raise DataError(f"{path} line {number}: {parts[0]} is listed more than once")
        seen.add(parts[0])
        label = int(parts[1]) - 1 if len(parts) > 1 else by_folder[folder]
        if label != by_folder[folder]:
            raise DataError(f"{path}: {parts[0]} is labelled {label + 1}, its folder is class {by_folder[folder] + 1}")
        entries.append(VideoEntry(parts[0], label))
    if not entries:  # scored on nothing, the accuracy would be undefined (and the test loop has no batch)
        raise DataError(f"UCF-101 split file {path} lists no videos")
    return entries


def present_entries(root: Path, entries: Sequence[VideoEntry], subset: str) -> tuple[list[VideoEntry], list]:
    """The listed videos that exist under ``root`` and the (path, reason) of those that do not.

    None present is an error at once: a root that lacks the listed videos must not cost an epoch of skips.
    """
    present = [e for e in entries if (root / e.path).is_file()]
    missing = [(str(root / e.path), "file not found") for e in entries if not (root / e.path).is_file()]
    if entries and not present:
        raise DataError(f"no {subset}ing video could be read under {root}: none of the {len(entries)} listed "
                        f"files exists (e.g. {entries[0].path}); see `vito docs datasets` for the layout")
    if missing:
        log.warning("UCF-101: %d of %d listed %s videos are missing under %s; evaluating the others",
                    len(missing), len(entries), subset, root)
    return present, missing


# --------------------------------------------------------------------------------------------------
# Clips


def evaluation_clip_starts(duration: float, num_clips: int, clip_seconds: float = CLIP_SECONDS) -> np.ndarray:
    """Start times spread uniformly from the beginning to the last start that still fits in the video."""
    return np.linspace(0.0, max(duration - clip_seconds, 0.0), num_clips)


def clip_frame_times(start: float) -> np.ndarray:
    """The times of a clip's frames: ``CLIP_FRAMES`` frames at ``CLIP_FPS`` from ``start``."""
    return start + np.arange(CLIP_FRAMES) / CLIP_FPS


def transform_clip(
    frames: torch.Tensor, size: int, train: bool, rng: np.random.Generator | None = None,
    color_jitter: Sequence[float] | None = None,
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` → normalised ``[T, 3, size, size]``, the same crop, flip and jitter for every frame.

    Test: the ImageNet evaluation view (``EvalTransform``: centre 224/256 crop, bicubic). Train: a random
    resized crop (area 8-100 %, aspect 3/4-4/3; the box sampler of pretraining), a flip with probability 1/2
    and, given ``color_jitter``, :func:`jitter_colours`.
    """
    import torchvision.transforms.v2.functional as TF  # loads torchvision's model zoo: kept out of `vito eval --help`

    clip = frames.permute(0, 3, 1, 2)
    if not train:
        return EvalTransform(size)(clip)
    rng = rng if rng is not None else np.random.default_rng()
    top, left, h, w = RandomResizedCropFlip(size, scale=TRAIN_CROP_SCALE).sample_box(*clip.shape[-2:], rng)
    clip = TF.resized_crop(clip, top, left, h, w, [size, size], antialias=True)
    if rng.random() < 0.5:
        clip = clip.flip(-1)
    if color_jitter is not None:
        clip = jitter_colours(clip, color_jitter, rng)
    return normalize(clip)


def jitter_colours(clip: torch.Tensor, strength: Sequence[float], rng: np.random.Generator) -> torch.Tensor:
    """AVID-CMA's clip colour jitter on uint8 ``[T, 3, H, W]``: brightness, contrast and saturation factors drawn
    from U[max(0, 1 - s), 1 + s], a hue shift from U[-h, h] (``strength = (b, c, s, h)``; a strength of 0 skips
    that change), applied in a random order, with the same values for every frame of the clip."""
    import torchvision.transforms.v2.functional as TF  # kept out of `vito eval --help`, as in train_clip_transform

    brightness, contrast, saturation, hue = strength
    changes = []
    for adjust, s in ((TF.adjust_brightness, brightness), (TF.adjust_contrast, contrast),
                      (TF.adjust_saturation, saturation)):
        if s > 0:
            changes.append((adjust, rng.uniform(max(0.0, 1 - s), 1 + s)))
    if hue > 0:
        changes.append((TF.adjust_hue, rng.uniform(-hue, hue)))
    for i in rng.permutation(len(changes)):
        adjust, value = changes[i]
        clip = adjust(clip, value)
    return clip


class UCF101Clips(Dataset):
    """``(clips [K, T, 3, S, S], label, path)``: one random clip (train) or the ``test_clips`` clips of a video.

    Unreadable videos yield ``None`` (``collate_readable`` drops and counts them); :meth:`read` raises instead.
    ``color_jitter``: the training clips' (brightness, contrast, saturation, hue) jitter, None for none.
    """

    def __init__(self, root: str | Path, entries: Sequence[VideoEntry], train: bool, image_size: int = 224,
                 test_clips: int = 10, seed: int = 0, color_jitter: Sequence[float] | None = None) -> None:
        self.root, self.entries, self.train, self.seed = Path(root), list(entries), train, seed
        self.image_size, self.test_clips, self.color_jitter = image_size, test_clips, color_jitter
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str] | tuple[None, int, str]:
        entry = self.entries[index]
        try:
            return self.read(index, self.epoch), entry.label, str(self.root / entry.path)
        except DataError as error:
            log.warning("skipping %s: %s", self.root / entry.path, error)
            return None, entry.label, str(self.root / entry.path)

    def read(self, index: int, draw: int) -> torch.Tensor:
        """Draw ``draw`` of video ``index``: the clips (training: one random one, a function of ``(seed, draw,
        index)``); ``DataError`` when the video cannot be read."""
        path = self.root / self.entries[index].path
        rng = np.random.default_rng([self.seed, draw, index])
        duration = probe_video(path).duration
        if self.train:
            starts = [max(duration - CLIP_SECONDS, 0.0) * rng.random()]
        else:
            starts = evaluation_clip_starts(duration, self.test_clips)
        times = np.concatenate([clip_frame_times(s) for s in starts])
        frames = read_frames(path, times, short_side=int(round(self.image_size / CROP_FRACTION)))
        clips = frames.view(len(starts), CLIP_FRAMES, *frames.shape[1:])
        return torch.stack([transform_clip(c, self.image_size, self.train, rng, self.color_jitter) for c in clips])


class TrainingClips(StepStream):
    """Endless training batches of one process from ``start_step``; use with ``DataLoader(batch_size=None)``.

    Step ``s`` takes positions ``first + s*B .. first + s*B + B - 1`` of the endless sequence of per-epoch
    permutations of the ``videos x clips_per_video`` samples (sample ``k`` is video ``k mod videos``), so every
    epoch takes ``clips_per_video`` random clips of every video (a batch may straddle two epochs); this process
    takes its ``B / K`` slots. A video's draws are numbered over the run (epoch ``e``'s draws of it are
    ``e * clips_per_video ..``), so no two of its clips come from the same random state. ``first``: positions
    taken by an earlier phase of the same fine-tune (the classifier warm-up), which this stream continues.
    An unreadable video is replaced by the next readable one of the sequence and listed in ``skipped`` once.
    Batch: ``{"step", "clips": [b, T, 3, S, S], "labels": [b], "skipped"}``; when no video can be read,
    ``{"step", "error": message}`` (raised by the fine-tune loop in the main process).
    """

    def __init__(self, videos: UCF101Clips, batch_size: int, seed: int, start_step: int, rank: int = 0,
                 world_size: int = 1, clips_per_video: int = 1, first: int = 0) -> None:
        if batch_size % world_size:
            raise VitoError(f"--batch-size {batch_size} does not split over {world_size} processes")
        self.videos, self.batch_size, self.start_step = videos, batch_size, start_step
        self.local, self.offset = batch_size // world_size, rank * (batch_size // world_size)
        self.clips_per_video, self.first = clips_per_video, first
        self._bad: dict[int, str] = {}
        self._shuffle = EpochShuffle(seed, len(videos) * clips_per_video)

    def batch(self, step: int) -> dict[str, Any]:
        clips, labels, skipped = [], [], []
        for slot in range(self.offset, self.offset + self.local):
            try:
                index, clip = self._first_readable(self.first + step * self.batch_size + slot, skipped)
            except DataError as error:
                return {"step": step, "error": str(error)}
            clips.append(clip[0])
            labels.append(self.videos.entries[index].label)
        return {"step": step, "clips": torch.stack(clips), "labels": torch.tensor(labels), "skipped": skipped}

    def draw(self, position: int) -> tuple[int, int]:
        """(video, its draw number) at a position of the endless sequence."""
        sample, epoch = self._shuffle(position)
        count = len(self.videos)
        return sample % count, epoch * self.clips_per_video + sample // count

    def _first_readable(self, position: int, skipped: list[tuple[str, str]]) -> tuple[int, torch.Tensor]:
        index, draw = self.draw(position)
        count = len(self.videos)
        for candidate in ((index + offset) % count for offset in range(count)):
            if candidate in self._bad:
                continue
            try:
                return candidate, self.videos.read(candidate, draw)
            except DataError as error:
                path = str(self.videos.root / self.videos.entries[candidate].path)
                self._bad[candidate] = str(error)
                skipped.append((path, str(error)))
                log.warning("skipping %s: %s", path, error)
        raise DataError(f"no training video could be read under {self.videos.root} ({len(self._bad)} unreadable, "
                        f"e.g. {next(iter(self._bad.values()))})")
