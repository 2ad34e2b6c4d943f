"""Training-loader throughput from prepared shards against raw videos and the other candidate shard format.

Every loader is ``vito.data.pretrain_batches.PretrainBatches`` (V=3 marginal-sampled views, 256-px short side,
random-resized crop + flip to 224) in one process and one thread, like one DataLoader worker; only the
source differs:
- ``raw video``: ``VideoFolderSource`` on the original web videos (seek + decode at full resolution);
- ``short-GOP video`` / ``all-intra video``: the other format the issue names, the same frames as the shards
  (10 fps, 256-px short side) re-encoded as H.264 with a keyframe every 10 frames / every frame, read by
  ``VideoFolderSource`` (seek + decode a few small frames);
- ``shards``: ``ShardSource`` (``vito prepare``'s tars of JPEG frames: seek + decode 3 JPEGs).
The loaders are timed in interleaved rounds so that load from other processes on a shared machine falls on
all of them alike. Preparing each format is timed too. Target: shards >= 5x the raw-video loader.

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_shards [--seconds 10]

Writes benchmarks/results/shards.json and shards.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.report_files import save_report
from vito.config import DataConfig
from vito.data.pretrain_batches import PretrainBatches
from vito.data.shards.format import ShardSettings
from vito.data.shards.reader import ShardSource
from vito.data.shards.writer import stored_frames, write_shards
from vito.data.sources import ClipSource, VideoEntry, VideoFolderSource, find_videos
from vito.data.video import VideoReader

BATCH = 8
ROUNDS = 5


def reencode(source: Path, target: Path, settings: ShardSettings, gop: int) -> None:
    """The frames a shard would store, as H.264 (CRF 18, no B-frames) with a keyframe every ``gop`` frames."""
    with VideoReader(source) as reader, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(settings.fps).limit_denominator(1000))
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(gop), "bf": "0", "crf": "18", "preset": "veryfast"}
        frames = stored_frames(reader, settings)
        first = next(frames)
        height, width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2  # 4:2:0 needs even sides
        stream.width, stream.height = width, height
        for frame in itertools.chain([first], frames):
            image = np.ascontiguousarray(frame[:height, :width])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))


def prepare(entries: list[VideoEntry], tmp: Path, settings: ShardSettings) -> tuple[dict[str, ClipSource], dict]:
    """Write each candidate format of the videos; return the sources and what preparing each cost."""
    sources: dict[str, ClipSource] = {"raw video": VideoFolderSource(entries)}
    costs = {}
    for name, gop in (("short-GOP video", 10), ("all-intra video", 1)):
        folder = tmp / name.split()[0]
        folder.mkdir()
        start = time.perf_counter()
        for entry in entries:
            reencode(entry.path, folder / f"{entry.path.parent.name}_{entry.path.stem}.mp4", settings, gop)
        costs[name] = _cost(time.perf_counter() - start, len(entries), folder.glob("*.mp4"))
        sources[name] = VideoFolderSource(find_videos(folder))
    manifest = tmp / "videos.csv"
    manifest.write_text("path\n" + "".join(f"{e.path}\n" for e in entries))
    start = time.perf_counter()
    index = write_shards(manifest, tmp / "shards", settings, progress=False)
    costs["shards"] = _cost(time.perf_counter() - start, index["num_clips"], (tmp / "shards").glob("*.tar"))
    sources["shards"] = ShardSource(tmp / "shards")
    return sources, costs


def _cost(seconds: float, videos: int, files) -> dict:
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    return {"seconds": round(seconds, 1), "videos_per_s": round(videos / seconds, 2), "megabytes": round(megabytes, 1)}


def throughput(sources: dict[str, ClipSource], data: DataConfig, seconds: float) -> dict[str, dict]:
    """Clips/s of each source, timed in ``ROUNDS`` interleaved rounds of ``seconds / ROUNDS`` each."""
    loaders = {name: PretrainBatches(source, data, seed=0, batch_size=BATCH) for name, source in sources.items()}
    steps = {name: 1 for name in loaders}
    clips = dict.fromkeys(loaders, 0)
    elapsed = dict.fromkeys(loaders, 0.0)
    for loader in loaders.values():
        loader.batch(0)  # warm-up: opens files, loads indices
    for _ in range(ROUNDS):
        for name, loader in loaders.items():
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / ROUNDS:
                clips[name] += len(loader.batch(steps[name])["video_index"])
                steps[name] += 1
            elapsed[name] += time.perf_counter() - start
    return {name: {"clips": clips[name], "seconds": round(elapsed[name], 2),
                   "clips_per_s": round(clips[name] / elapsed[name], 2)} for name in loaders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per loader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = find_videos(Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos")
    data = DataConfig(num_views=3, image_size=224, decode_short_side=256, sampling="marginal", batch_size=BATCH)
    settings = ShardSettings(fps=10.0, short_side=256, quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        sources, costs = prepare(entries, Path(tmp), settings)
        loaders = throughput(sources, data, args.seconds)
    raw = loaders["raw video"]["clips_per_s"]
    report = {
        "what": "PretrainBatches clips/s, V=3, 224 px crops from 256-px frames, 1 process, 1 thread",
        "videos": len(entries),
        "shard_settings": asdict(settings),
        "loaders": {name: {**result, "speedup_vs_raw": round(result["clips_per_s"] / raw, 1),
                           "prepare": costs.get(name)} for name, result in loaders.items()},
        "speedup": round(loaders["shards"]["clips_per_s"] / raw, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, "
                   f"1-min load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}",
    }
    save_report("shards", report, markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Shard loader vs raw-video loader (and the other candidate format)\n",
        f"{report['what']}; {report['videos']} shared videos ({report['machine']}); loaders timed in "
        f"{ROUNDS} interleaved rounds. Stored frames: 10 fps, 256-px short side.\n",
        "| source | clips/s | vs raw | prepare s | prepare videos/s | MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["loaders"].items():
        prep = r["prepare"] or {"seconds": "-", "videos_per_s": "-", "megabytes": "-"}
        lines.append(f"| {name} | {r['clips_per_s']} | {r['speedup_vs_raw']}x | {prep['seconds']} | "
                     f"{prep['videos_per_s']} | {prep['megabytes']} |")
    lines.append(f"\nShards (JPEG q90 frames in indexed tars): {report['speedup']}x the raw-video loader "
                 "(target >= 5x).\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
