"""Clip loading throughput: vito's seeking reader against a naive decoder and OpenCV, in one run.

Every method loads the same clips (V=3 marginal-sampled frames from a 2.56 s window of each video, decoded
at a 256-px short side, cropped to 224 with flip) in one process (torch and OpenCV limited to one thread),
like one DataLoader worker:

- ``vito``: ``vito.data.sources.VideoFolderSource.read_clip`` (seek, decode, convert only kept frames);
- ``vito_auto_threads``: the same with FFmpeg's automatic (frame + slice) decoder threading (default: one);
- ``naive``: decode from the first frame up to the last needed one, converting every frame to RGB (what a
  ``read_video``-style loader does), then pick the frames;
- ``naive_keep_only``: the same decode from the start, but converting only the kept frames (isolates seeking);
- ``opencv``: ``cv2.VideoCapture`` seek (``CAP_PROP_POS_FRAMES`` = t x fps) + read per frame, then resize.

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_loader [--clips-per-video 1]

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
        fps = capture.get(cv2.CAP_PROP_FPS)
        for t in times:  # seeking by milliseconds fails on WebM here; frame numbers work everywhere
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(float(t) * fps + 1e-6))
            ok, bgr = capture.read()
            if not ok:  # OpenCV cannot seek in some files (WebM here): grab from the start instead
                OPENCV_SEEK_FAILURES.append(path)
                bgr = opencv_sequential(path, int(float(t) * fps + 1e-6))
            size = resize_size(bgr.shape[1], bgr.shape[0])
            frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        return torch.from_numpy(np.stack(frames))
    finally:
        capture.release()


OPENCV_SEEK_FAILURES: list[str] = []


def opencv_sequential(path: str, frame_number: int) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        for _ in range(frame_number):
            capture.grab()
        ok, bgr = capture.read()
        if not ok:
            raise RuntimeError(f"OpenCV could not read {path} at frame {frame_number}")
        return bgr
    finally:
        capture.release()


def measure(methods: dict[str, Callable[[int, np.ndarray], torch.Tensor]], clips: list[tuple[int, np.ndarray]]) -> dict:
    """Seconds per method, interleaving the methods clip by clip so load changes on a shared machine hit
    all of them alike."""
    crop = RandomResizedCropFlip(SIZE, scale=(0.4, 1.0))
    seconds = dict.fromkeys(methods, 0.0)
    for name, load in methods.items():
        load(*clips[0])  # warm-up (imports, first file open)
    for number, (index, times) in enumerate(clips):
        names = list(methods)
        names = names[number % len(names) :] + names[: number % len(names)]  # rotate who goes first
        for name in names:
            rng = np.random.default_rng(number)
            begin = time.perf_counter()
            frames = methods[name](index, times).permute(0, 3, 1, 2)
            torch.stack([crop(f, rng) for f in frames])
            seconds[name] += time.perf_counter() - begin
    results = {name: {"clips": len(clips), "seconds": s, "clips_per_s": len(clips) / s} for name, s in seconds.items()}
    for name, r in results.items():
        print(f"{name:>20}: {r['clips_per_s']:6.2f} clips/s")
    return results


def threaded(thread_type: str, count: int, load: Callable[[int, np.ndarray], torch.Tensor]) -> Callable:
    def run(index: int, times: np.ndarray) -> torch.Tensor:
        default = video.THREAD_TYPE, video.THREAD_COUNT
        video.THREAD_TYPE, video.THREAD_COUNT = thread_type, count
        try:
            return load(index, times)
        finally:
            video.THREAD_TYPE, video.THREAD_COUNT = default

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos")
    parser.add_argument("--clips-per-video", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = VideoFolderSource(find_videos(args.videos))
    rng = np.random.default_rng(0)
    clips = [
        (i, clip_times(video.probe_video(source.name(i)).duration, rng))
        for i in range(len(source))
        for _ in range(args.clips_per_video)
    ]
    vito = lambda i, t: load_vito(source, i, t)  # noqa: E731
    methods = {
        "vito": vito,
        "vito_auto_threads": threaded("AUTO", 0, vito),
        "naive": lambda i, t: load_naive(source.name(i), t),
        "naive_keep_only": lambda i, t: load_naive(source.name(i), t, False),
    }
    try:
        import cv2

        cv2.setNumThreads(1)
        methods["opencv"] = lambda i, t: load_opencv(source.name(i), t)
    except ImportError:
        print("opencv-python-headless is not installed: skipping the OpenCV comparison")
    results = measure(methods, clips)
    if "opencv" in results:
        results["opencv"]["seek_failures_fell_back_to_sequential"] = len(set(OPENCV_SEEK_FAILURES))
    base = results["vito"]["clips_per_s"]
    ratios = {f"vito_over_{k}": base / v["clips_per_s"] for k, v in results.items() if k != "vito"}
    report = {
        "setup": {"videos": len(source), "clips": len(clips), "views": VIEWS, "window_s": WINDOW,
                  "decode_short_side": SHORT_SIDE, "crop": SIZE, "torch_threads": 1, "cpus": os.cpu_count(),
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
        "# Clip loading throughput (one process; methods interleaved clip by clip)",
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
