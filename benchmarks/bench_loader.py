"""Clip loading throughput: vito's seeking reader against a naive decoder, OpenCV, torchcodec and decord.

Every method loads the same clips (V=3 marginal-sampled frames from a 2.56 s window of each video, decoded
at a 256-px short side, cropped to 224 with flip) in one process with one decoding thread, like one
DataLoader worker; the methods take turns clip by clip in one run:

- ``vito``: ``vito.data.sources.VideoFolderSource.read_clip`` (open, probe, seek, demux, decode only the
  wanted frames and the frames they reference, convert only kept frames);
- ``vito_auto_threads``: the same with FFmpeg's automatic (frame + slice) decoder threading (default: one);
- ``vito_no_skip``: the same reader decoding every frame after the seek (isolates the frame skipping);
- ``naive``: decode from the first frame up to the last needed one, converting every frame to RGB (what a
  ``read_video``-style loader does), then pick the frames;
- ``naive_keep_only``: the same decode from the start, but converting only the kept frames (isolates seeking);
- ``opencv``: ``cv2.VideoCapture`` seek (``CAP_PROP_POS_FRAMES`` = t x fps) + read per frame, then resize;
- ``torchcodec``: ``VideoDecoder(seek_mode="exact")`` with its decoder-side ``Resize``, then
  ``get_frames_played_at(times)`` (sorted, one seek per keyframe run: the same sampling);
- ``decord``: ``decord.VideoReader(width, height)``, the frame index shown at each time from its frame
  timestamps, then ``get_batch`` (decord 0.6 cannot open a file whose header has no duration, e.g. a WebM).

Frame sizes come from one probe per video before timing (the comparison decoders need them up front).
Besides speed, each method's clips are compared with vito's: ``clips_unlike_vito`` counts clips whose frames
differ by more than a resize kernel can explain (mean |difference| > 20 of 255), e.g. garbage decoded after a
seek (imageio/cockatoo.mp4 needs the stream start; see ``vito.data.video.VideoReader._read_group``).

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_loader [--clips-per-video 1]

Writes benchmarks/results/loader.json and loader.md. The comparison decoders are optional
(``pip install vito[bench]``; torchcodec also needs FFmpeg's shared libraries, e.g. ``apt-get install
ffmpeg``, and a build matching the installed torch); a missing one is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
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
UNLIKE_LEVEL = 20.0  # mean |uint8 difference| above which two decodes of a clip show different pictures

Loader = Callable[[int, np.ndarray], torch.Tensor]


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


def load_torchcodec(path: str, times: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    decoder = VideoDecoder(path, num_ffmpeg_threads=1, dimension_order="NHWC", transforms=[Resize(size[::-1])])
    return decoder.get_frames_played_at((decoder.metadata.begin_stream_seconds + times).tolist()).data


def load_decord(path: str, times: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The frame shown at t is the last one starting at or before t, as in vito."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), width=size[0], height=size[1], num_threads=1)
    starts = reader.get_frame_timestamp(range(len(reader)))[:, 0]
    shown = np.searchsorted(starts, starts[0] + times + 1e-9, side="right") - 1
    return torch.from_numpy(reader.get_batch(np.maximum(shown, 0).tolist()).asnumpy())


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


def measure(methods: dict[str, Loader], clips: list[tuple[int, np.ndarray]], videos: list[str]) -> dict:
    """Seconds per method, interleaving the methods clip by clip so load changes on a shared machine hit
    all of them alike; which clips each method decodes to pictures unlike vito's, and which it cannot read
    at all (their time until the error still counts as load time, which flatters it)."""
    crop = RandomResizedCropFlip(SIZE, scale=(0.4, 1.0))
    seconds = {name: [0.0, 0.0] for name in methods}  # wall, CPU
    unlike: dict[str, list[str]] = {name: [] for name in methods}
    failed: dict[str, list[str]] = {name: [] for name in methods}
    for name, load in methods.items():
        with contextlib.suppress(Exception):  # failures are counted below
            load(*clips[0])  # warm-up (imports, first file open)
    for number, (index, times) in enumerate(clips):
        names = list(methods)
        names = names[number % len(names) :] + names[: number % len(names)]  # rotate who goes first
        decoded = {}
        for name in names:
            begin = time.perf_counter(), time.process_time()
            try:
                decoded[name] = methods[name](index, times)
                torch.stack([crop(f, np.random.default_rng(number)) for f in decoded[name].permute(0, 3, 1, 2)])
            except Exception as exc:  # a comparison decoder that cannot read this file
                if name == "vito":
                    raise
                failed[name].append(videos[index])
                print(f"{name} cannot read {videos[index]}: {str(exc).strip().splitlines()[-1]}")
            seconds[name][0] += time.perf_counter() - begin[0]
            seconds[name][1] += time.process_time() - begin[1]
        for name, frames in decoded.items():
            if differs(frames, decoded["vito"]):
                unlike[name].append(videos[index])
    results = {name: {"clips": len(clips), "seconds": wall, "clips_per_s": len(clips) / wall,
                      "cpu_seconds_per_clip": cpu / len(clips),
                      "clips_unlike_vito": len(unlike[name]), "videos_unlike_vito": sorted(set(unlike[name])),
                      "clips_failed": len(failed[name]), "videos_failed": sorted(set(failed[name]))}
               for name, (wall, cpu) in seconds.items()}
    for name, r in results.items():
        print(f"{name:>20}: {r['clips_per_s']:6.2f} clips/s, {r['cpu_seconds_per_clip']:.3f} CPU s/clip "
              f"({r['clips_unlike_vito']} unlike vito's, {r['clips_failed']} failed)")
    return results


def differs(frames: torch.Tensor, reference: torch.Tensor) -> bool:
    if frames.shape != reference.shape:
        return True
    return bool((frames.float() - reference.float()).abs().mean() > UNLIKE_LEVEL)


def patched(load: Loader, **settings: object) -> Loader:
    """``load`` run with module constants of ``vito.data.video`` temporarily replaced."""

    def run(index: int, times: np.ndarray) -> torch.Tensor:
        default = {name: getattr(video, name) for name in settings}
        for name, value in settings.items():
            setattr(video, name, value)
        try:
            return load(index, times)
        finally:
            for name, value in default.items():
                setattr(video, name, value)

    return run


def comparison_decoders(source: VideoFolderSource, sizes: list[tuple[int, int]]) -> dict[str, Loader]:
    """The optional third-party decoders that are installed."""
    methods = {}
    try:
        import cv2

        cv2.setNumThreads(1)
        methods["opencv"] = lambda i, t: load_opencv(source.name(i), t)
    except ImportError:
        print("opencv-python-headless is not installed: skipping the OpenCV comparison")
    try:
        import torchcodec.decoders  # noqa: F401  (fails without FFmpeg's shared libraries)

        methods["torchcodec"] = lambda i, t: load_torchcodec(source.name(i), t, sizes[i])
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"torchcodec is not usable ({exc}): skipping the torchcodec comparison")
    try:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        methods["decord"] = lambda i, t: load_decord(source.name(i), t, sizes[i])
    except ImportError:
        print("decord is not installed: skipping the decord comparison")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")) / "videos")
    parser.add_argument("--clips-per-video", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = VideoFolderSource(find_videos(args.videos))
    infos = [video.probe_video(source.name(i)) for i in range(len(source))]
    sizes = [resize_size(info.width, info.height) for info in infos]
    rng = np.random.default_rng(0)
    clips = [(i, clip_times(info.duration, rng)) for i, info in enumerate(infos) for _ in range(args.clips_per_video)]
    vito = lambda i, t: load_vito(source, i, t)  # noqa: E731
    methods = {
        "vito": vito,
        "vito_auto_threads": patched(vito, THREAD_TYPE="AUTO", THREAD_COUNT=0),
        "vito_no_skip": patched(vito, SKIPPING_CODECS=frozenset()),
        "naive": lambda i, t: load_naive(source.name(i), t),
        "naive_keep_only": lambda i, t: load_naive(source.name(i), t, False),
        **comparison_decoders(source, sizes),
    }
    results = measure(methods, clips, [str(entry.path.relative_to(args.videos)) for entry in source.entries])
    if "opencv" in results:
        results["opencv"]["seek_failures_fell_back_to_sequential"] = len(set(OPENCV_SEEK_FAILURES))
    base = results["vito"]["clips_per_s"]
    ratios = {f"vito_over_{k}": base / v["clips_per_s"] for k, v in results.items() if k != "vito"}
    cpu = results["vito"]["cpu_seconds_per_clip"]
    cpu_ratios = {f"vito_over_{k}": v["cpu_seconds_per_clip"] / cpu for k, v in results.items() if k != "vito"}
    report = {
        "setup": {"videos": len(source), "clips": len(clips), "views": VIEWS, "window_s": WINDOW,
                  "decode_short_side": SHORT_SIDE, "crop": SIZE, "torch_threads": 1, "cpus": os.cpu_count(),
                  "python": platform.python_version(), "torch": torch.__version__, **library_versions()},
        "results": results,
        "ratios": ratios,
        "cpu_time_ratios": cpu_ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "loader.json", report)
    with atomic_write(RESULTS / "loader.md") as handle:
        handle.write(markdown(report))
    print({k: round(v, 2) for k, v in ratios.items()})


def library_versions() -> dict[str, str]:
    """Versions of the decoding libraries that are installed."""
    versions = {"av": av.__version__}
    for name, module in [("opencv", "cv2"), ("torchcodec", "torchcodec"), ("decord", "decord")]:
        try:
            versions[name] = __import__(module).__version__
        except (ImportError, RuntimeError, OSError):
            pass
    return versions


def markdown(report: dict) -> str:
    s = report["setup"]
    versions = ", ".join(f"{name} {s[name]}" for name in ("av", "opencv", "torchcodec", "decord") if name in s)
    lines = [
        "# Clip loading throughput (one process; methods interleaved clip by clip)",
        "",
        f"{s['clips']} clips from {s['videos']} videos; each clip = {s['views']} frames from a {s['window_s']} s "
        f"window, decoded at {s['decode_short_side']} px short side, random-resized-crop to {s['crop']}. "
        f"{s['cpus']} CPUs (shared machine: read ratios, not absolute numbers). {versions}.",
        "",
        f"Clips unlike vito's: mean |difference| from vito's frames above {UNLIKE_LEVEL:.0f} of 255 (more than "
        "another resize kernel explains), e.g. garbage decoded after a seek. Clips failed: the method cannot "
        "read the file; the time until its error still counts as load time. CPU s per clip: the process's "
        "CPU time (all threads), less sensitive than wall time to other jobs on a shared machine.",
        "",
        "| method | clips/s | vito / method | CPU s per clip | vito / method (CPU) | clips unlike vito's "
        "| clips failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        ratio = report["ratios"].get(f"vito_over_{name}", 1.0)
        cpu_ratio = report["cpu_time_ratios"].get(f"vito_over_{name}", 1.0)
        lines.append(f"| {name} | {r['clips_per_s']:.2f} | {ratio:.2f}x | {r['cpu_seconds_per_clip']:.3f} "
                     f"| {cpu_ratio:.2f}x | {r['clips_unlike_vito']} | {r['clips_failed']} |")
    lines.append("")
    for name, r in report["results"].items():
        for what, key in [("decodes pictures unlike vito's in", "videos_unlike_vito"), ("cannot read", "videos_failed")]:
            if r[key]:
                lines.append(f"- {name} {what} {', '.join(r[key])}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
