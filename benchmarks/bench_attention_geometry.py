"""Why the demo's attention pictures looked "bottom-centre": where the ResNet's cells lie, and what it avoids.

    python -m benchmarks.bench_attention_geometry RUN_DIR     # RUN_DIR: a finished `vito demo --out RUN_DIR`
    python -m benchmarks.bench_attention_geometry             # runs `vito demo` (seed 0) first, ~270 CPU s

Four cheap diagnostics (no training), written to benchmarks/results/attention_geometry.{json,md}:

1. Cell centres: for each row of each pooled map of the demo's random-init ResNet-18 at 64 px, the centroid of
   |d feature / d input| over input rows. An even tiling puts cell l at (l + 0.5) * stride - 0.5; stride-2
   layers with padding 1 keep positions 0, 2, 4, ..., which puts it at stride * l.
2. Where the subject falls in the training crops (the demo's crop sampler on its training frames): the mean
   subject area per cell of an even 4x4 grid. A prior of the world or of the crops would show here.
3. The trained run's attention on the held-out frames: share on the subject with cells placed on the even
   tiling vs where they lie (the stride grid), the mass per row and column, and the maps of inputs with no
   content at all (zeros, noise): what the network prefers by position alone.
4. The same for the run's random initialisation.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.report_files import save_report
from vito.config import load_config
from vito.data.augment import RandomResizedCropFlip, normalize
from vito.demo import measure_frames, subject_share
from vito.demo_world import NUM_VIDEOS, SIZE, make_video, part_times, subject_mask
from vito.engine.checkpoint import load_checkpoint
from vito.models.vito import build_vito


def cell_centres(network: torch.nn.Module, size: int) -> list[list[float]]:
    """Per pooled stage, the gradient centroid (input row) of each row of cells."""
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = []
    for fmap in network.backbone(images):
        rows = []
        for row in range(fmap.shape[-2]):
            (grad,) = torch.autograd.grad(fmap[:, :, row].abs().sum(), images, retain_graph=True)
            weight = grad.abs().sum(dim=(0, 1, 3))
            rows.append(round(float((weight * torch.arange(size)).sum() / weight.sum()), 1))
        out.append(rows)
    return out


def subject_in_crops(scale: float, size: int, draws: int = 4) -> list[list[float]]:
    """Mean subject area per cell of an even 4x4 grid over the training crops (crops and flips as in training)."""
    crop, rng, total, count = RandomResizedCropFlip(size, (scale, 1.0)), np.random.default_rng(0), np.zeros((4, 4)), 0
    for k in range(NUM_VIDEOS):
        video = make_video(k)
        for t in part_times(heldout=False)[::2]:
            mask = subject_mask(video, t)
            for _ in range(draws):
                (top, left, h, w), flip = crop.sample(SIZE, SIZE, rng)
                patch = torch.from_numpy(np.ascontiguousarray(mask[top : top + h, left : left + w]))[None, None]
                patch = patch.flip(-1) if flip else patch
                total += torch.nn.functional.adaptive_avg_pool2d(patch, 4)[0, 0].numpy()
                count += 1
    return (total / count).round(3).tolist()


def _rounded(values: torch.Tensor) -> list:
    return np.round(values.double().numpy(), 3).tolist()


@torch.no_grad()
def looks(network: torch.nn.Module, frames, size: int) -> dict:
    network.eval()
    masks = network.attention_maps(normalize(frames.queries.permute(0, 3, 1, 2)))
    blank = network.attention_maps(torch.zeros(1, 3, size, size))
    noise = network.attention_maps(torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(1)))
    out = []
    for m, b, n in zip(masks, blank, noise, strict=True):
        mean = m.mean(dim=0)
        out.append({"shape": list(m.shape[-2:]),
                    "share_even_tiling": float(subject_share(m, frames.query_subject, size, "even").mean()),
                    "share_stride_grid": float(subject_share(m, frames.query_subject, size, "stride").mean()),
                    "uniform_stride_grid": float(subject_share(torch.full_like(m, 1 / m[0].numel()),
                                                               frames.query_subject, size, "stride").mean()),
                    "mass_per_row": _rounded(mean.sum(dim=1)), "mass_per_column": _rounded(mean.sum(dim=0)),
                    "zero_input_map": _rounded(b[0]), "noise_input_mean_map": _rounded(n.mean(dim=0))})
    return {"subject_area": float(frames.query_subject.mean()), "stages": out}


def markdown(report: dict) -> str:
    lines = ["# Where the demo's attention cells lie, and what the network prefers by position", "",
             f"Run: `{report['run']}` ({report['config']}). Reproduce: `{report['command']}`.", "",
             "## 1. Cell centres (gradient centroid, input rows, random-init ResNet-18 at 64 px)", "",
             "| map | centroid per cell row | even tiling would be | stride * row |", "|---|---|---|---|"]
    for rows in report["cell_centres"]:
        h, stride = len(rows), 64 // len(rows)
        lines.append(f"| {h}x{h} | {rows} | {[(r + 0.5) * stride - 0.5 for r in range(h)]} | "
                     f"{[stride * r for r in range(h)]} |")
    lines += ["", f"## 2. Mean subject area per cell of an even 4x4 grid over the training crops "
              f"(crop minimum {report['crop_min_scale']})", "", "| row | columns |", "|---|---|"]
    lines += [f"| {i} | {row} |" for i, row in enumerate(report["subject_in_crops"])]
    for name in ("trained", "random_init"):
        part = report[name]
        lines += ["", f"## {'3' if name == 'trained' else '4'}. {name}: attention on the held-out frames "
                  f"(subject area {part['subject_area']:.1%})", "",
                  "| map | on subject, even tiling | on subject, stride grid | uniform attention, stride grid | "
                  "mass per row (top to bottom) | per column (left to right) | zero input | noise input (mean) |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in part["stages"]:
            lines.append(f"| {s['shape'][0]}x{s['shape'][1]} | {s['share_even_tiling']:.1%} | "
                         f"{s['share_stride_grid']:.1%} | {s['uniform_stride_grid']:.1%} | {s['mass_per_row']} | "
                         f"{s['mass_per_column']} | {s['zero_input_map']} | {s['noise_input_mean_map']} |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a finished `vito demo --out RUN_DIR` (default: run one)")
    args = parser.parse_args()
    if args.run_dir is None:
        with tempfile.TemporaryDirectory(prefix="vito_demo_") as tmp:
            subprocess.run([sys.executable, "-m", "vito", "demo", "--out", tmp], check=True, stdout=subprocess.DEVNULL)
            analyse(Path(tmp), "python -m benchmarks.bench_attention_geometry (a fresh `vito demo`, seed 0)")
    else:
        analyse(args.run_dir, " ".join(["python -m benchmarks.bench_attention_geometry", *sys.argv[1:]]))


def analyse(run_dir: Path, command: str) -> None:
    torch.set_num_threads(1)
    config = load_config(run_dir / "config.yaml")
    size = config.data.image_size
    videos = [sorted((run_dir / "videos" / part).glob("*.mp4")) for part in ("train", "heldout")]
    frames = measure_frames(*videos, size)
    initial, trained = build_vito(config), build_vito(config)
    trained.load_state_dict(load_checkpoint(run_dir)["model"])
    report = {"run": str(run_dir), "command": command,
              "config": f"seed {config.train.seed}, {config.train.max_steps} steps, {size} px, "
                        f"stages {list(config.model.stages)}",
              "crop_min_scale": config.data.crop_min_scale,
              "cell_centres": cell_centres(initial.online.eval(), size),
              "subject_in_crops": subject_in_crops(config.data.crop_min_scale, size),
              "trained": looks(trained.online, frames, size), "random_init": looks(initial.online, frames, size)}
    save_report("attention_geometry", report, markdown(report))


if __name__ == "__main__":
    main()
