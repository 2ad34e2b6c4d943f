"""Training-loader throughput from prepared shards against raw videos, in one run on the same videos.

Both loaders are ``vito.data.sources.PretrainBatches`` (V=3 marginal-sampled views, 256-px short side,
random-resized crop + flip to 224) in one process and one thread, like one DataLoader worker; only the
source differs: ``VideoFolderSource`` (seek + decode the web video) or ``ShardSource`` (seek + decode 3
JPEG frames). The shards are prepared first with ``vito.data.shards.write_shards`` (10 fps, 256 px) and
that cost is reported too. Target (design measurements): shards >= 5x the raw-video loader.

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_shards [--seconds 10]

Writes benchmarks/results/shards.json and shards.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from vito.config import DataConfig
from vito.data.shards import ShardSettings, ShardSource, write_shards
from vito.data.sources import PretrainBatches, VideoFolderSource, find_videos
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
BATCH = 8


def clips_per_second(source, data: DataConfig, seconds: float) -> dict:
    """Batches of ``BATCH`` clips until ``seconds`` have passed (at least two batches)."""
    batches = PretrainBatches(source, data, seed=0, batch_size=BATCH)
    batches.batch(0)  # warm-up: opens files, loads indices
    clips, start, step = 0, time.perf_counter(), 1
    while step < 3 or time.perf_counter() - start < seconds:
        clips += len(batches.batch(step)["video_index"])
        step += 1
    elapsed = time.perf_counter() - start
    return {"clips": clips, "seconds": round(elapsed, 2), "clips_per_s": round(clips / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per loader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    videos = Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos"
    entries = find_videos(videos)
    data = DataConfig(num_views=3, image_size=224, decode_short_side=256, sampling="marginal", batch_size=BATCH)
    settings = ShardSettings(fps=10.0, short_side=256, quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "videos.csv"
        manifest.write_text("path\n" + "".join(f"{e.path}\n" for e in entries))
        start = time.perf_counter()
        index = write_shards(manifest, Path(tmp) / "shards", settings, progress=False)
        prepare_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (Path(tmp) / "shards").glob("*.tar"))
        shards = clips_per_second(ShardSource(Path(tmp) / "shards"), data, args.seconds)
    raw = clips_per_second(VideoFolderSource(entries), data, args.seconds)
    report = {
        "what": "PretrainBatches clips/s, V=3, 224 px crops from 256-px frames, 1 process, 1 thread",
        "videos": len(entries),
        "shard_settings": asdict(settings),
        "prepare": {"seconds": round(prepare_s, 1), "videos_per_s": round(index["num_clips"] / prepare_s, 2),
                    "megabytes": round(size / 1e6, 1), "skipped": index["skipped"]},
        "raw_video": raw,
        "shards": shards,
        "speedup": round(shards["clips_per_s"] / raw["clips_per_s"], 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}",
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "shards.json", report)
    with atomic_write(RESULTS / "shards.md") as handle:
        handle.write(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    prep = report["prepare"]
    return (
        "# Shard loader vs raw-video loader\n\n"
        f"{report['what']}; {report['videos']} shared videos ({report['machine']}).\n\n"
        "| source | clips/s |\n|---|---|\n"
        f"| raw video (VideoFolderSource) | {report['raw_video']['clips_per_s']} |\n"
        f"| shards (ShardSource) | {report['shards']['clips_per_s']} |\n\n"
        f"Speed-up: {report['speedup']}x (target >= 5x). Preparing the shards (10 fps, 256 px, JPEG q90) took "
        f"{prep['seconds']} s ({prep['videos_per_s']} videos/s) and {prep['megabytes']} MB.\n"
    )


if __name__ == "__main__":
    main()
