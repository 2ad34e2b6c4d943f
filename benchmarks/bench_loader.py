"""Clip loading throughput: vito's seeking reader against a naive decoder and OpenCV, in one run.

Every method loads the same clips (V=3 marginal-sampled frames from a 2.56 s window of each video, decoded
at a 256-px short side, cropped to 224 with flip) in one process and one thread, like one DataLoader worker:

- ``vito``: ``vito.data.sources.VideoFolderSource.read_clip`` (seek, decode, convert only kept frames);
- ``vito_auto_threads``: the same with FFmpeg's automatic (frame + slice) threading;
- ``naive``: decode from the first frame up to the last needed one, converting every frame to RGB (what a
  ``read_video``-style loader does), then pick the frames;
- ``naive_keep_only``: the same decode from the start, but converting only the kept frames (isolates seeking);
- ``opencv``: ``cv2.VideoCapture`` seek (``CAP_PROP_POS_MSEC``) + read per frame, then resize.

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_loader [--clips-per-video 2]

Writes benchmarks/results/loader.json and loader.md. OpenCV is optional (``pip install vito[bench]``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from vito.data import video
from vito.data.augment import RandomResizedCropFlip
from vito.data.sampling import sample_times
from vito.data.sources import VideoFolderSource, find_videos
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
SHORT_SIDE, SIZE, VIEWS, WINDOW = 256, 224, 3, 2.56


def clip_times(duration: float, rng: np.random.Generator) -> np.ndarray:
    return sample_times(duration, VIEWS, WINDOW, "marginal", 0.0, rng)


def resize_size(width: int, height: int) -> tuple[int, int]:
    scale = SHORT_SIDE / min(width, height)
    return round(width * scale), round(height * scale)


def load_vito(source: VideoFolderSource, index: int, times: np.ndarray) -> torch.Tensor:
    return source.read_clip(index, lambda duration: times, SHORT_SIDE)


def load_naive(path: str, times: np.ndarray, convert_all: bool = True) -> torch.Tensor:
    """Decode from the start; the frame for t is the last one with timestamp <= t."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        size = resize_size(stream.codec_context.width, stream.codec_context.height)
        start, base = stream.start_time or 0, float(stream.time_base)
        wanted, kept, previous = sorted(times), {}, None
        for frame in container.decode(stream):
            t = (frame.pts - start) * base
            image = frame.reformat(*size, format="rgb24").to_ndarray() if convert_all else frame
            while wanted and wanted[0] < t and previous is not None:
                kept[wanted.pop(0)] = previous
            if not wanted:
                break
            previous = image
        for t in wanted:
            kept[t] = previous
    if not convert_all:
        kept = {t: f.reformat(*size, format="rgb24").to_ndarray() for t, f in kept.items()}
    return torch.from_numpy(np.stack([kept[t] for t in times]))


def load_opencv(path: str, times: np.ndarray) -> torch.Tensor:
    import cv2

    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        frames = []
        for t in times:
            capture.set(cv2.CAP_PROP_POS_MSEC, float(t) * 1000)
            ok, bgr = capture.read()
            if not ok:
                raise RuntimeError(f"OpenCV could not read {path} at {t:.2f} s")
            size = resize_size(bgr.shape[1], bgr.shape[0])
            frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        return torch.from_numpy(np.stack(frames))
    finally:
        capture.release()


def measure(name: str, load: Callable[[int, np.ndarray], torch.Tensor], clips: list[tuple[int, np.ndarray]]) -> dict:
    crop = RandomResizedCropFlip(SIZE, scale=(0.4, 1.0))
    rng = np.random.default_rng(0)
    load(*clips[0])  # warm-up (imports, first file open)
    begin = time.perf_counter()
    for index, times in clips:
        frames = load(index, times).permute(0, 3, 1, 2)
        torch.stack([crop(f, rng) for f in frames])
    seconds = time.perf_counter() - begin
    print(f"{name:>20}: {len(clips) / seconds:6.2f} clips/s")
    return {"clips": len(clips), "seconds": seconds, "clips_per_s": len(clips) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos")
    parser.add_argument("--clips-per-video", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = VideoFolderSource(find_videos(args.videos))
    rng = np.random.default_rng(0)
    clips = [
        (i, clip_times(video.probe_video(source.name(i)).duration, rng))
        for i in range(len(source))
        for _ in range(args.clips_per_video)
    ]
    results = {"vito": measure("vito", lambda i, t: load_vito(source, i, t), clips)}
    results["naive"] = measure("naive", lambda i, t: load_naive(source.name(i), t), clips)
    results["naive_keep_only"] = measure("naive_keep_only", lambda i, t: load_naive(source.name(i), t, False), clips)
    try:
        import cv2

        cv2.setNumThreads(1)
        results["opencv"] = measure("opencv", lambda i, t: load_opencv(source.name(i), t), clips)
    except ImportError:
        print("opencv-python-headless is not installed: skipping the OpenCV comparison")
    video.THREAD_TYPE, video.THREAD_COUNT = "AUTO", 0
    results["vito_auto_threads"] = measure("vito_auto_threads", lambda i, t: load_vito(source, i, t), clips)
    video.THREAD_TYPE, video.THREAD_COUNT = "SLICE", 1
    base = results["vito"]["clips_per_s"]
    ratios = {f"vito_over_{k}": base / v["clips_per_s"] for k, v in results.items() if k != "vito"}
    report = {
        "setup": {"videos": len(source), "clips": len(clips), "views": VIEWS, "window_s": WINDOW,
                  "decode_short_side": SHORT_SIDE, "crop": SIZE, "threads": 1, "cpus": os.cpu_count(),
                  "python": platform.python_version(), "av": av.__version__, "torch": torch.__version__},
        "results": results,
        "ratios": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "loader.json", report)
    with atomic_write(RESULTS / "loader.md") as handle:
        handle.write(markdown(report))
    print({k: round(v, 2) for k, v in ratios.items()})


def markdown(report: dict) -> str:
    s = report["setup"]
    lines = [
        "# Clip loading throughput (one process, one thread)",
        "",
        f"{s['clips']} clips from {s['videos']} videos; each clip = {s['views']} frames from a {s['window_s']} s "
        f"window, decoded at {s['decode_short_side']} px short side, random-resized-crop to {s['crop']}. "
        f"{s['cpus']} CPUs (shared machine: read ratios, not absolute numbers). PyAV {s['av']}.",
        "",
        "| method | clips/s | vito / method |",
        "|---|---|---|",
    ]
    for name, r in report["results"].items():
        ratio = report["ratios"].get(f"vito_over_{name}", 1.0)
        lines.append(f"| {name} | {r['clips_per_s']:.2f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
