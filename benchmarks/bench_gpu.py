"""GPU throughput of pretraining and evaluation, on data it synthesizes: one command for a lent GPU machine.

Measures, on the first CUDA device (or the CPU with ``--smoke``):

- ``model step``: the VITO ResNet-50 training step alone (3 views at 224, bf16 autocast, channels_last, LARS
  + EMA update, the loop's code), views/s at the largest batch that fits, with and without ``torch.compile``;
- ``input``: the loader alone (shards, DataLoader workers, ``vito.pretrain.feed.DeviceFeed``), clips/s it can
  supply with CPU decoding (4/8/16 workers) and with GPU decoding (``data.decode_device=cuda``: nvJPEG), with
  the CPU time it costs: CPU cores per 1,000 views/s;
- ``loop``: input + photometric augmentation + model step, as ``vito.pretrain.loop`` runs them, views/s and the
  share of time the loop waited for its input, for each input above;
- ``eval``: frozen-feature extraction (ResNet-50 ``embed``, 224 px) images/s, and DAVIS label propagation
  (res4 at stride 8 of 480x854 frames, 21-frame context, top-10, radius 18) frames/s.

It needs torch, torchvision, timm, OpenCV and NumPy, not PyAV (shards are synthesized, not prepared from
video), simplejpeg (OpenCV encodes and decodes instead) or kornia (without it the loop runs without the
photometric augmentation, and the report says so; carry a kornia wheel to include it). About 5 minutes on
an H100/H200 including warm-up and compilation.

    python -m benchmarks.bench_gpu            # writes benchmarks/results/gpu.json and gpu.md
    python -m benchmarks.bench_gpu --smoke    # tiny CPU run of every section (the test suite runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vito.config import Config, load_config
from vito.data.augment import PhotometricAugment
from vito.data.gpu_decode import JpegBatches
from vito.data.jpeg import encode_jpeg
from vito.data.pretrain_batches import build_pretrain_loader
from vito.data.shards.format import ShardSettings
from vito.data.shards.writer import write_clips
from vito.errors import VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import load_encoder
from vito.eval.video.davis_propagation import PropagationSettings, propagate_features
from vito.io import atomic_write, write_json
from vito.models.vito import build_vito
from vito.pretrain.feed import DeviceFeed
from vito.pretrain.optim import LARS, ema_tau, param_groups

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full GPU benchmark or the smoke test."""

    backbone: str = "resnet50"
    image_size: int = 224
    batches: tuple[int, ...] = (512, 384, 320, 256, 192, 128, 64)  # clips (x3 views), largest that fits is used
    model_steps: int = 20
    loop_steps: int = 30
    warmup: int = 2  # untimed steps first (3 with torch.compile)
    workers: tuple[int, ...] = (4, 8, 16)
    clips: int = 96  # synthesized videos, 3 s each at 10 fps, 256 x 455
    frame_size: tuple[int, int] = (256, 455)
    extract_batch: int = 256
    davis_frames: int = 25  # from frame 21 on the context is full
    davis_size: tuple[int, int] = (480, 854)
    compile: bool = True
    overrides: tuple[str, ...] = ()  # further config overrides (the smoke run's small heads)


SMOKE = Plan(backbone="resnet18", image_size=32, batches=(2,), model_steps=1, loop_steps=1, warmup=1, workers=(0,),
             clips=4,
             frame_size=(48, 64), extract_batch=4, davis_frames=3, davis_size=(64, 96), compile=False,
             overrides=("model.projector_hidden=64", "model.projector_dim=32", "data.decode_short_side=48"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(plan: Plan, batch: int, workers: int, decode: str) -> Config:
    return load_config(None, [f"model.backbone={plan.backbone}", f"data.image_size={plan.image_size}",
                              f"data.batch_size={batch}", f"data.num_workers={workers}", "data.num_views=3",
                              f"data.decode_device={decode}", "train.precision=bf16", "optim.warmup_steps=10",
                              *plan.overrides])


class Trainer:
    """The loop's step (photometry on the device, forward, backward, LARS, EMA) on one model."""

    def __init__(self, config: Config, device: torch.device, compiled: bool):
        self.config, self.device = config, device
        self.model = build_vito(config).to(device).to(memory_format=torch.channels_last)
        self.network = torch.compile(self.model) if compiled else self.model
        o = config.optim
        self.optimizer = LARS(param_groups(self.model, o.weight_decay), lr=0.1, momentum=o.momentum,
                              weight_decay=o.weight_decay, trust_coefficient=o.trust_coefficient)
        self.augment = photometric(config.data.image_size)
        self.generator = torch.Generator(device=device).manual_seed(0)
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    def step(self, views: torch.Tensor, video_index: torch.Tensor, step: int = 0) -> None:
        b, v = views.shape[:2]
        if self.augment is not None:
            images = self.augment(views.flatten(0, 1), torch.arange(v, device=self.device).repeat(b), self.generator)
            images = images.unflatten(0, (b, v))
        else:
            images = views.float().div_(255)
        with self.autocast:
            out = self.network(images, video_index=video_index)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.model.update_target(ema_tau(step, 1000, self.config.optim.ema_base))


def photometric(size: int) -> PhotometricAugment | None:
    try:
        return PhotometricAugment(size=size)
    except VitoError:  # no kornia here
        return None


def model_step(plan: Plan, device: torch.device, compiled: bool) -> dict[str, Any]:
    """Views/s of the training step alone at the largest batch of ``plan.batches`` that fits."""
    for batch in plan.batches:
        try:
            trainer = Trainer(run_config(plan, batch, 0, "cpu"), device, compiled)
            views = torch.randint(0, 256, (batch, 3, 3, plan.image_size, plan.image_size), dtype=torch.uint8,
                                  device=device)
            index = torch.arange(batch, device=device)
            for _ in range(plan.warmup + compiled):  # warm-up (and compilation)
                trainer.step(views, index)
            sync(device)
            start = time.perf_counter()
            for step in range(plan.model_steps):
                trainer.step(views, index, step)
            sync(device)
            seconds = time.perf_counter() - start
            return {"batch_clips": batch, "views_per_s": 3 * batch * plan.model_steps / seconds,
                    "compiled": compiled, "photometric": trainer.augment is not None}
        except torch.OutOfMemoryError:
            trainer = views = None
            torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {plan.batches} fits")


def synthesize_shards(folder: Path, plan: Plan) -> Path:
    """``plan.clips`` clips of smooth random frames (JPEG q90, 10 fps, 3 s) as shards."""
    rng = np.random.default_rng(0)
    height, width = plan.frame_size
    settings = ShardSettings(fps=10.0, short_side=min(height, width), quality=90)

    def clips():
        for k in range(plan.clips):
            base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
            frames = [cv2.resize(np.roll(base, t, axis=1), (width, height), interpolation=cv2.INTER_CUBIC)
                      for t in range(30)]
            yield ({"path": f"synthetic/{k:04d}.mp4", "id": str(k)}, {"duration": 3.0, "width": width,
                   "height": height}, [encode_jpeg(f, settings.quality) for f in frames])

    write_clips(folder / "shards", clips(), settings)
    return folder / "shards"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the loader's workers, once joined)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def loop(plan: Plan, shards: Path, batch: int, workers: int, decode: str, device: torch.device,
         trainer: Trainer | None) -> dict[str, Any]:
    """Views/s of the input alone (``trainer`` None) or of input + training step, and their CPU cost."""
    config = run_config(plan, batch, workers, decode)
    loader = build_pretrain_loader(shards, config.data, seed=0, batches=JpegBatches if decode == "cuda" else None)
    loader.pin_memory = device.type == "cuda"
    cpu_start = cpu_seconds()
    feed = DeviceFeed(iter(loader), device, plan.image_size, decode)
    steps = plan.loop_steps
    for step in range(steps + plan.warmup):
        if step == plan.warmup:  # after the workers' start and the first batches
            sync(device)
            start, feed.waited = time.perf_counter(), 0.0
        batch_data = feed.take()
        if trainer is not None:
            trainer.step(batch_data["views"], batch_data["video_index"], step)
        if step + 1 < steps + plan.warmup:
            feed.prefetch()
    sync(device)
    seconds = time.perf_counter() - start
    waited = feed.waited
    del feed, loader  # joins the workers, so that their CPU time is counted
    cpu = cpu_seconds() - cpu_start
    views_per_s = 3 * batch * steps / seconds
    return {"decode": decode, "workers": workers, "batch_clips": batch, "views_per_s": views_per_s,
            "input_wait_share": waited / seconds,
            "cpu_cores_per_1000_views_per_s": cpu / seconds / (views_per_s / 1000)}


def extraction(plan: Plan, device: torch.device) -> dict[str, Any]:
    encoder = load_encoder("timm:" + plan.backbone, device=device)
    images = torch.randn(plan.extract_batch, 3, 224, 224, device=device)
    with inference_mode(device):
        for _ in range(2):
            encoder.embed(images)
        sync(device)
        start, repeats = time.perf_counter(), 1 if plan is SMOKE else 10
        for _ in range(repeats):
            encoder.embed(images)
        sync(device)
    return {"batch": plan.extract_batch, "images_per_s": plan.extract_batch * repeats / (time.perf_counter() - start)}


def davis(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Encoding + propagation of ``plan.davis_frames`` synthetic frames (three rectangles as objects)."""
    encoder = load_encoder("timm:" + plan.backbone, device=device)
    encoder.remove_stride(-2)
    settings = PropagationSettings(max_frames=plan.davis_frames)
    height, width = plan.davis_size
    first = np.zeros((height, width), dtype=np.uint8)
    for k, (y, x) in enumerate([(0.2, 0.2), (0.5, 0.6), (0.7, 0.3)], start=1):
        first[int(y * height): int(y * height) + height // 5, int(x * width): int(x * width) + width // 5] = k
    frames = torch.rand(plan.davis_frames, 3, height, width, device=device)

    def features() -> list[torch.Tensor]:
        out = []
        with inference_mode(device, encoder.precision):
            for chunk in frames.split(settings.batch_size):
                maps = encoder.feature_maps(chunk, [settings.stage])[0]
                out += list(torch.nn.functional.normalize(maps.float(), dim=1))
        return out

    features()  # warm-up
    sync(device)
    start = time.perf_counter()
    propagate_features(features(), first, settings)
    sync(device)
    return {"frames": plan.davis_frames, "size": list(plan.davis_size),
            "frames_per_s": plan.davis_frames / (time.perf_counter() - start)}


def attempt(results: dict[str, Any], name: str, work: Callable[[], Any]) -> None:
    """Run one measurement; a failure is recorded (and the others still run)."""
    try:
        results[name] = work()
    except Exception as error:  # noqa: BLE001 - a benchmark reports what failed and goes on
        results[name] = {"error": f"{type(error).__name__}: {error}"}
    print(name, results[name], flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every section (the test suite's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json and gpu.md")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else Plan()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "smoke": args.smoke, "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "plan": dataclasses.asdict(plan), "photometric": photometric(plan.image_size) is not None,
    }
    started = time.perf_counter()
    attempt(report, "model_step", lambda: model_step(plan, device, compiled=False))
    if plan.compile:
        attempt(report, "model_step_compiled", lambda: model_step(plan, device, compiled=True))
    batch = report["model_step"].get("batch_clips", plan.batches[-1])
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthesize_shards(Path(tmp), plan)
        inputs = [("cpu", w) for w in plan.workers] + [("cuda", plan.workers[0])]
        for decode, workers in inputs:
            if decode == "cuda" and device.type != "cuda" and not args.smoke:
                continue
            mode = decode if device.type == "cuda" or decode == "cpu" else "cuda"  # smoke: the JPEG path on CPU
            attempt(report, f"input_{decode}_{workers}", lambda: loop(plan, shards, batch, workers, mode, device, None))
            trainer = Trainer(run_config(plan, batch, workers, decode), device, compiled=False)
            attempt(report, f"loop_{decode}_{workers}",
                    lambda: loop(plan, shards, batch, workers, mode, device, trainer))
            trainer = None
    attempt(report, "feature_extraction", lambda: extraction(plan, device))
    attempt(report, "davis_propagation", lambda: davis(plan, device))
    report["seconds"] = time.perf_counter() - started
    report["load_average_1min"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu.json", report)
    with atomic_write(args.out / "gpu.md") as handle:
        handle.write(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    def value(entry: dict[str, Any], key: str, unit: str) -> str:
        return entry["error"] if "error" in entry else f"{entry[key]:.1f} {unit}"

    lines = [f"# GPU benchmark{' (smoke run: tiny sizes on CPU, not a measurement)' if report['smoke'] else ''}",
             "", f"Device: {report['device']}, {report['cpus']} CPUs, torch {report['torch']}; "
             f"photometric augmentation {'on' if report['photometric'] else 'OFF (kornia missing)'}; "
             f"{report['seconds']:.0f} s in all.", "",
             "| measurement | value | notes |", "|---|---|---|"]
    for key, entry in report.items():
        if not isinstance(entry, dict) or key == "plan":
            continue
        if key.startswith("model_step"):
            note = f"batch {entry.get('batch_clips')} clips x 3 views" + (", torch.compile" * ("compiled" in key))
            lines.append(f"| {key} | {value(entry, 'views_per_s', 'views/s')} | {note} |")
        elif key.startswith(("input_", "loop_")):
            note = "" if "error" in entry else (
                f"{entry['workers']} workers, input wait {entry['input_wait_share']:.0%}, "
                f"{entry['cpu_cores_per_1000_views_per_s']:.2f} CPU cores per 1,000 views/s")
            lines.append(f"| {key} | {value(entry, 'views_per_s', 'views/s')} | {note} |")
        elif key == "feature_extraction":
            lines.append(f"| {key} | {value(entry, 'images_per_s', 'images/s')} | batch {entry.get('batch')} |")
        elif key == "davis_propagation":
            lines.append(f"| {key} | {value(entry, 'frames_per_s', 'frames/s')} | "
                         f"{entry.get('frames')} frames at {entry.get('size')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
