"""Worker CPU seconds per training clip from shards, against the decode-only bound.

A DataLoader worker reading shards cannot avoid decoding the stored JPEG frames of each clip; everything
else it does (index look-ups, reads, crops, resizes, batch assembly) is overhead on top. This benchmark
measures, in this process and one thread (like one worker, without the DataLoader's transfer):

- ``loader``: ``vito.data.pretrain_batches.PretrainBatches.batch`` on a ``ShardSource`` (whatever the library does);
- ``per-frame tensor crops``: the original path, kept here as the reference: ``ShardSource.read_clip``
  (decode every frame to uint8 [V, H, W, 3]), then per frame a torchvision antialiased ``resized_crop`` and
  flip on a tensor, then ``torch.stack`` per clip and per batch;
- ``decode + one bilinear resize``: the same decode, then one bare OpenCV bilinear resize of each frame's crop
  box (the loader's boxes) into a preallocated view: no antialiasing, flip, checks or batch assembly. No crop
  path can cost less than this, so it shows how much of the target the decode and one resize leave;
- ``decode-only bound``: ``simplejpeg.decode_jpeg`` at full size of the same stored frames the loader read
  (their bytes read beforehand, untimed).

CPU time (``time.process_time``) per clip, median of ``--rounds`` interleaved rounds (every contender makes
the same batches in each round, so load from other processes falls on all of them alike). Shards are
prepared from ``$VITO_DATA/videos`` into a temporary folder (10 fps, 256-px short side, JPEG q90, as
``vito prepare``'s defaults). V=3 views, 224-px crops, batch of 16 clips.

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_loader_cost [--rounds 7]

Writes benchmarks/results/loader_cost.json and loader_cost.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
import torch

from benchmarks.report_files import save_report
from vito.config import DataConfig
from vito.data.pretrain_batches import PretrainBatches
from vito.data.sampling import sample_times
from vito.data.shards.format import ShardSettings, frame_indices
from vito.data.shards.reader import ShardSource
from vito.data.shards.writer import write_shards
from vito.data.sources import find_videos

BATCH = 16
TARGET = 1.33  # the limit: loader CPU per clip at most 1.33x the decode-only bound


def prepare(folder: Path, settings: ShardSettings) -> ShardSource:
    """Shards of the shared videos in ``folder``."""
    entries = find_videos(Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos")
    manifest = folder / "videos.csv"
    manifest.write_text("path\n" + "".join(f"{e.path}\n" for e in entries))
    write_shards(manifest, folder / "shards", settings, progress=False)
    return ShardSource(folder / "shards")


def per_frame_batch(loader: PretrainBatches, step: int) -> tuple[torch.Tensor, list[tuple[int, np.ndarray]]]:
    """The original batch: decoded clips, per-frame tensor crops, stacks; and (clip, times) of each slot.

    Mirrors ``PretrainBatches.batch`` for a source without bad clips (no replacements): the same
    (seed, step, rank, slot) generator draws the view times and then the crops.
    """
    d = loader.data
    views, read = [], []
    for slot in range(loader.batch_size):
        rng = np.random.default_rng([loader.seed, step, loader.rank, slot])
        index = loader.video_for(step, slot)
        drawn: list[np.ndarray] = []

        def times_fn(duration: float, rng=rng, drawn=drawn) -> np.ndarray:
            drawn.append(sample_times(duration, d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng))
            return drawn[-1]

        frames = loader.source.read_clip(index, times_fn, d.decode_short_side).permute(0, 3, 1, 2)
        views.append(torch.stack([loader.crop(frame, rng) for frame in frames]))
        read.append((index, drawn[-1]))
    return torch.stack(views), read


def stored_jpegs(source: ShardSource, read: list[tuple[int, np.ndarray]]) -> list[bytes]:
    """The JPEG bytes of the stored frames shown at the given times of the given clips."""
    jpegs = []
    for index, times in read:
        clip = source.clip(index)
        with open(source.folder / clip["tar"], "rb") as handle:
            for k in frame_indices(times, clip["fps"], clip["num_frames"]):
                offset, size = clip["frames"][k]
                handle.seek(offset)
                jpegs.append(handle.read(size))
    return jpegs


def crop_boxes(loader: PretrainBatches, step: int) -> list[tuple[int, int, int, int]]:
    """The crop box of every view of a batch, as ``per_frame_batch`` draws them (untimed): the view times, then
    per view the box for the frame size that ``read_jpegs`` reads from the headers."""
    d, boxes = loader.data, []
    for slot in range(loader.batch_size):
        rng = np.random.default_rng([loader.seed, step, loader.rank, slot])

        def times_fn(duration: float, rng=rng) -> np.ndarray:
            return sample_times(duration, d.num_views, d.window_seconds, d.sampling, d.delta_seconds, rng)

        _, (height, width) = loader.source.read_jpegs(loader.video_for(step, slot), times_fn, d.decode_short_side)
        boxes += [loader.crop.sample(height, width, rng)[0] for _ in range(d.num_views)]
    return boxes


def decode_all(jpegs: list[bytes]) -> None:
    """The decode-only bound: each frame decoded and dropped (a list keeping every frame alive would add the
    page faults of ever-new memory to the bound)."""
    for data in jpegs:
        simplejpeg.decode_jpeg(data, "rgb")


def decode_and_resize(jpegs: list[bytes], boxes: list[tuple[int, int, int, int]], size: int) -> None:
    """Decode each frame and resize its crop box once with OpenCV's plain bilinear (the floor of any crop path)."""
    out = np.empty((size, size, 3), dtype=np.uint8)
    for data, (top, left, h, w) in zip(jpegs, boxes):
        frame = simplejpeg.decode_jpeg(data, "rgb")
        cv2.resize(frame[top : top + h, left : left + w], (size, size), dst=out, interpolation=cv2.INTER_LINEAR)


def cpu_seconds(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def measure(loader: PretrainBatches, rounds: int, steps_per_round: int) -> dict[str, list[float]]:
    """CPU seconds per clip of each contender in each round (the same steps for all in a round)."""
    per_clip: dict[str, list[float]] = {"loader": [], "per-frame tensor crops": [],
                                        "decode + one bilinear resize": [], "decode-only bound": []}
    max_error = 0.0
    for r in range(rounds):
        steps = range(1 + r * steps_per_round, 1 + (r + 1) * steps_per_round)
        reads = {step: per_frame_batch(loader, step)[1] for step in steps}  # untimed: the frames to decode
        jpegs = [data for step in steps for data in stored_jpegs(loader.source, reads[step])]
        boxes = [box for step in steps for box in crop_boxes(loader, step)]
        clips = len(steps) * loader.batch_size
        order = list(per_clip) if r % 2 == 0 else list(reversed(per_clip))  # alternate who goes first
        for name in order:
            if name == "loader":
                seconds = cpu_seconds(lambda: [loader.batch(step) for step in steps])
            elif name == "per-frame tensor crops":
                seconds = cpu_seconds(lambda: [per_frame_batch(loader, step) for step in steps])
            elif name == "decode + one bilinear resize":
                seconds = cpu_seconds(lambda: decode_and_resize(jpegs, boxes, loader.data.image_size))
            else:
                seconds = cpu_seconds(lambda: decode_all(jpegs))
            per_clip[name].append(seconds / clips)
        step = steps[0]  # the contenders must make the same batch (up to resize rounding)
        new, (old, _) = loader.batch(step)["views"], per_frame_batch(loader, step)
        max_error = max(max_error, float((new.float() - old.float()).abs().mean(dim=(-3, -2, -1)).max()))
    per_clip["max_mean_abs_difference"] = [max_error]
    return per_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    parser.add_argument("--steps", type=int, default=4, help=f"batches of {BATCH} clips per contender and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    data = DataConfig(num_views=3, image_size=224, decode_short_side=256, sampling="marginal", batch_size=BATCH)
    settings = ShardSettings(fps=10.0, short_side=256, quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        source = prepare(Path(tmp), settings)
        loader = PretrainBatches(source, data, seed=0, batch_size=BATCH)
        loader.batch(0), per_frame_batch(loader, 0)  # warm-up: indices loaded, files in the page cache
        rounds = measure(loader, args.rounds, args.steps)
        clips = len(source)
    max_error = rounds.pop("max_mean_abs_difference")[0]
    median = {name: statistics.median(values) for name, values in rounds.items()}
    bound = median["decode-only bound"]
    report = {
        "what": f"worker CPU seconds per clip from shards, V=3, 224-px crops of 256-px frames, batch {BATCH}, "
                "1 process, 1 thread",
        "clips_in_shards": clips,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "ms_per_clip": {name: round(1e3 * value, 3) for name, value in median.items()},
        "ms_per_clip_rounds": {name: [round(1e3 * v, 3) for v in values] for name, values in rounds.items()},
        "times_bound": {name: round(value / bound, 3) for name, value in median.items()},
        "ratio_bound_over": {name: round(bound / value, 3) for name, value in median.items()},
        "loader_vs_per_frame_max_mean_abs_difference": round(max_error, 3),
        "target": f"loader <= {TARGET}x the decode-only bound (ratio >= {1 / TARGET:.2f})",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, "
                   f"1-min load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
                   f"OpenCV {cv2.__version__}",
    }
    save_report("loader_cost", report, markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Loader worker CPU per clip from shards vs the decode-only bound\n",
        f"{report['what']}; {report['clips_in_shards']} shared videos as shards ({report['machine']}); "
        f"median of {report['rounds']} interleaved rounds of {report['steps_per_round']} batches.\n",
        "| path | CPU ms / clip | x bound | bound / path |",
        "|---|---|---|---|",
    ]
    for name, ms in report["ms_per_clip"].items():
        lines.append(f"| {name} | {ms} | {report['times_bound'][name]}x | {report['ratio_bound_over'][name]} |")
    lines.append(f"\nLoader vs per-frame tensor crops: largest per-image mean |difference| "
                 f"{report['loader_vs_per_frame_max_mean_abs_difference']} of 255. Target: {report['target']}.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
