"""Training-step cost of VITO's multi-scale attention pooling against global average pooling, in one run.

Both models see the same views (B clips x V views at S px, channels_last, on the CPU), in the precision the
training loop would pick here (its own helper decides): bf16 autocast where the CPU computes in bf16, fp32
where bf16 would only be emulated (several times slower, and not what training would run). The report says
which was used.

- ``vito``: attention pooling on the last two stages (paper §3.1), projector input = sum of both widths;
- ``average``: the MoCLR baseline, global average pooling of the last stage.

A step is everything the training loop does per batch: forward of the online and target networks,
backward, a LARS update and the EMA target update. Steps of the two models alternate so that the shared
machine's load hits both alike; the median step time of each is reported, and their ratio. Because a
shared machine's timings are noisy, the floating-point operations of a step (forward + backward, counted
by ``torch.utils.flop_counter`` on the meta device: no compute) are reported too, for ResNet-18 and -50.

    .venv/bin/python -m benchmarks.bench_train_step [--backbones resnet18 resnet50] [--steps 25]

Writes benchmarks/results/train_step.json and train_step.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vito.config import LossConfig, ModelConfig, TrainConfig
from vito.io import atomic_write, write_json
from vito.models.vito import Vito
from vito.pretrain.loop import _autocast
from vito.pretrain.optim import LARS, param_groups

FLOP_BACKBONES = ("resnet18", "resnet50")

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 1.10


def build(config: ModelConfig) -> tuple[Vito, LARS]:
    torch.manual_seed(0)
    model = Vito(config, LossConfig()).to(memory_format=torch.channels_last)
    optimizer = LARS(param_groups(model, 1e-6), lr=0.1, momentum=0.9, trust_coefficient=0.001)
    return model, optimizer


def train_step(model: Vito, optimizer: LARS, views: torch.Tensor,
               autocast: contextlib.AbstractContextManager) -> float:
    """One full step; returns its wall time in seconds."""
    begin = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = model(views)["loss"]
    loss.backward()
    optimizer.step()
    model.update_target(0.996)
    return time.perf_counter() - begin


def configs(backbone: str) -> dict[str, ModelConfig]:
    return {
        "vito": ModelConfig(backbone=backbone, stages=[-2, -1], attention=True),
        "average": ModelConfig(backbone=backbone, stages=[-1], attention=False),
    }


def step_flops(config: ModelConfig, batch: int, views: int, size: int) -> int:
    """Forward + backward FLOPs of one step, counted on the meta device (shapes only, no arithmetic)."""
    with torch.device("meta"):
        model = Vito(config, LossConfig())
        images = torch.randn(batch, views, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(images)["loss"].backward()
    return counter.get_total_flops()


def flop_ratios(batch: int, views: int, size: int) -> dict:
    results = {}
    for backbone in FLOP_BACKBONES:
        flops = {name: step_flops(config, batch, views, size) for name, config in configs(backbone).items()}
        results[backbone] = {"gflops": {k: v / 1e9 for k, v in flops.items()}, "ratio": flops["vito"] / flops["average"]}
    return results


def measure(backbone: str, images: torch.Tensor, steps: int, warmup: int,
            autocast: contextlib.AbstractContextManager) -> dict:
    """Median step time (and quartiles) of both models on ``images`` [B, V, 3, S, S], their steps interleaved.

    The order within a pair alternates (one model first, then the other), so that neither model always runs
    on the caches and allocator state the other one left.
    """
    models = {name: build(config) for name, config in configs(backbone).items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(warmup + steps):
        for name in sorted(models, reverse=step % 2 == 1):
            model, optimizer = models[name]
            seconds = train_step(model, optimizer, images, autocast)
            if step >= warmup:
                times[name].append(seconds)
        print(f"{backbone} step {step}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items() if t))
    results = {name: {"median_s": statistics.median(t), "quartiles_s": statistics.quantiles(t, n=4)[::2],
                      "steps_s": t} for name, t in times.items()}
    ratio = results["vito"]["median_s"] / results["average"]["median_s"]
    return {"results": results, "ratio_vito_over_average": ratio, "meets_target": ratio <= TARGET_RATIO}


def run(backbones: list[str], batch: int, views: int, size: int, steps: int, warmup: int, precision: str) -> dict:
    autocast = _autocast(precision, torch.device("cpu"))  # the training loop's own decision
    images = torch.randn(batch, views, 3, size, size)
    images = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (batch, views))
    load_before = os.getloadavg()[0]
    measured = {backbone: measure(backbone, images, steps, warmup, autocast) for backbone in backbones}
    return {
        "setup": {"clips": batch, "views": views, "image_size": size, "steps": steps, "warmup_steps": warmup,
                  "precision_asked": precision,
                  "precision": "bf16 autocast" if isinstance(autocast, torch.autocast) else "fp32",
                  "memory_format": "channels_last", "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                  "python": platform.python_version(), "torch": torch.__version__,
                  "load_average_1min": [load_before, os.getloadavg()[0]]},  # other processes on the machine
        "measured": measured,
        "target_ratio": TARGET_RATIO,
        "flops": flop_ratios(batch, views, size),
    }


def markdown(report: dict) -> str:
    s = report["setup"]
    fallback = " (bf16 asked; this CPU has no bf16 arithmetic, so the training loop would run fp32)" \
        if s["precision_asked"] == "bf16" and s["precision"] == "fp32" else ""
    rows = [f"| {name} | {_median_and_quartiles(m['results']['vito'])} | "
            f"{_median_and_quartiles(m['results']['average'])} | **{m['ratio_vito_over_average']:.3f}** | "
            f"{'yes' if m['meets_target'] else 'no'} |"
            for name, m in report["measured"].items()]
    return "\n".join([
        "# Training-step time: VITO attention pooling vs global average pooling",
        "",
        f"{s['clips']} clips x {s['views']} views at {s['image_size']} px, {s['precision']}{fallback}, "
        f"{s['memory_format']}, {s['threads']} threads on {s['cpus']} CPUs (shared machine, load average "
        f"{s['load_average_1min'][0]:.1f} before and {s['load_average_1min'][1]:.1f} after: read the ratio, not "
        f"the absolute times). Step = online + target forward, backward, LARS, EMA update; median of "
        f"{s['steps']} interleaved steps after {s['warmup_steps']} warm-up steps.",
        "",
        f"| backbone | vito step (s) | average step (s) | ratio of medians | <= {report['target_ratio']:.2f} |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Step times: median [first quartile - third quartile]. vito = attention pooling on res4 + res5; "
        "average = global average pooling of res5 (MoCLR).",
        "",
        "Floating-point operations of one step (forward + backward of the online network and forward of the "
        "target, same batch), counted, not timed:",
        "",
        "| backbone | vito GFLOP | average GFLOP | ratio |",
        "|---|---|---|---|",
        *[f"| {name} | {f['gflops']['vito']:.1f} | {f['gflops']['average']:.1f} | {f['ratio']:.3f} |"
          for name, f in report["flops"].items()],
        "",
        "The attention MLPs have hidden width = channel width (spec §10 [DEFAULT]). A ResNet-18's (256x256 on "
        "res4, 512x512 on res5) are a small share of a step; a ResNet-50's (1024x1024, 2048x2048) add "
        f"{report['flops']['resnet50']['ratio'] - 1:.1%} to its arithmetic, and a step cannot take much less "
        "extra time than that without changing the model: `model.attention_hidden` narrows them.",
        "",
    ])


def _median_and_quartiles(result: dict) -> str:
    low, high = result["quartiles_s"]
    return f"{result['median_s']:.3f} [{low:.3f} - {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18"])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=TrainConfig().precision,
                        help="as train.precision: bf16 falls back to fp32 where the CPU has no bf16 arithmetic")
    args = parser.parse_args()
    report = run(args.backbones, args.clips, args.views, args.size, args.steps, args.warmup, args.precision)
    write_json(RESULTS / "train_step.json", report)
    with atomic_write(RESULTS / "train_step.md") as handle:
        handle.write(markdown(report))
    for name, measured in report["measured"].items():
        print(f"{name}: vito / average step time {measured['ratio_vito_over_average']:.3f} (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
