"""FCOS* against plain FCOS: fine-tune time per image on the CPU, interleaved rounds.

The same backbone (ResNet-18, random weights), FPN, canvas, seed and batches (``DetectionBatches`` over the
43 shared COCO images, A.3 train views, decoded before timing so that only the training step is timed), the
same AdamW and learning rate; the heads differ: ``fcos`` (torchvision's head with vito's global normaliser),
``fcos-star/atss`` (FCOS*, its first 4 of 30 epochs: ATSS assignment) and ``fcos-star/aligned`` (FCOS* after:
task-aligned assignment). A step is forward + backward + optimizer step; after a warm-up of every variant,
each variant runs ``--steps`` + 1 steps per round, the first one left out. Rounds rotate which variant runs
first; per round a variant's seconds per image = median step time / batch, and its ratio to ``fcos`` in the
same round. The report gives the median over rounds of those ratios (a shared machine changes speed between
rounds more than between variants), and the ratio of a whole A.3 schedule (4/30 ATSS, 26/30 aligned).

    .venv/bin/python -m benchmarks.bench_fcos_star [--rounds 5] [--steps 3] [--size 256 320] [--batch 2]

Needs the shared data ($VITO_DATA). Writes benchmarks/results/fcos_star.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.loop_vs_plain import machine
from vito.eval.core.encoders import load_encoder
from vito.eval.dense.detection.data import DetectionImages, load_annotations
from vito.eval.dense.detection.recipe import (
    ALIGNMENT_START_EPOCHS,
    DetectionBatches,
    FinetunePlan,
    build_detector,
    detection_loss,
    make_optimizer,
)
from vito.eval.dense.detection.settings import DetectSettings
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
EPOCHS = 30
# variant -> (head setting, first task-aligned step: 0 = aligned from the start, a large number = ATSS throughout)
VARIANTS = {"fcos": ("fcos", 0), "fcos-star/atss": ("fcos-star", 10**9), "fcos-star/aligned": ("fcos-star", 0)}


def step_times(encoder, num_classes: int, batches: list[dict], head: str, alignment_start: int,
               size: tuple[int, int], fpn_channels: int) -> list[float]:
    """Seconds of each training step after the first (warm-up)."""
    settings = DetectSettings(dataset="coco", val_ann=Path("unused"), resolution=size, batch_size=len(
        batches[0]["images"]), weight_decay=1e-4, fpn_channels=fpn_channels, head=head)
    plan = FinetunePlan(settings, seed=0, steps=len(batches), warmup_steps=0, lr=1e-4)
    model = build_detector(encoder, num_classes, plan).train()
    optimizer = make_optimizer(model, plan)
    times = []
    for batch in batches:
        begin = time.perf_counter()
        losses = detection_loss(model, batch, alignment_start=alignment_start)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        times.append(time.perf_counter() - begin)
    return times[1:]


def run(shared: Path, rounds: int, steps: int, size: tuple[int, int], batch: int, fpn_channels: int) -> dict:
    coco = shared / "detection" / "coco"
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    stream = DetectionBatches(DetectionImages(annotations, coco / "images", train=True, canvas=size, seed=0), batch,
                              seed=0, start=0)
    batches = [stream.batch(step) for step in range(steps + 1)]
    encoder = load_encoder("torchvision:resnet18")
    names = list(VARIANTS)
    for name in names:  # warm-up: the first steps of a process at a new shape are slow (oneDNN set-up)
        step_times(encoder, len(annotations.categories), batches[:2], *VARIANTS[name], size, fpn_channels)
    load_before = os.getloadavg()[0]
    per_round = []
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        seconds = {name: statistics.median(step_times(encoder, len(annotations.categories), batches, *VARIANTS[name],
                                                      size, fpn_channels)) / batch for name in order}
        per_round.append({"order": order, "seconds_per_image": seconds,
                          "ratio_to_fcos": {n: seconds[n] / seconds["fcos"] for n in names}})
        print(f"round {index}: " + ", ".join(f"{n} {seconds[n]:.3f} s/img" for n in names), flush=True)
    ratios = {n: statistics.median(r["ratio_to_fcos"][n] for r in per_round) for n in names}
    share = ALIGNMENT_START_EPOCHS / EPOCHS
    return {
        "setup": {"backbone": "torchvision:resnet18 (random weights)", "fpn_channels": fpn_channels,
                  "size": list(size), "batch": batch, "rounds": rounds, "steps_per_round": steps, "precision": "fp32",
                  **machine(load_before)},
        "seconds_per_image": {n: statistics.median(r["seconds_per_image"][n] for r in per_round) for n in names},
        "ratio_to_fcos": ratios,
        "ratio_a3_schedule": share * ratios["fcos-star/atss"] + (1 - share) * ratios["fcos-star/aligned"],
        "rounds": per_round,
    }


def markdown(report: dict) -> str:
    s, before_after = report["setup"], report["setup"]["load_average_1min"]
    rows = [f"| {n} | {report['seconds_per_image'][n]:.3f} | {report['ratio_to_fcos'][n]:.3f} | "
            + ", ".join(f"{r['ratio_to_fcos'][n]:.2f}" for r in report["rounds"]) + " |" for n in VARIANTS]
    return "\n".join([
        "# FCOS* vs plain FCOS: fine-tune time per image (CPU)",
        "",
        f"{s['backbone']}, FPN and head width {s['fpn_channels']}, {s['batch']} images per step at "
        f"{s['size'][0]}x{s['size'][1]} (A.3 train views, decoded before timing), {s['precision']}, "
        f"{s['threads']} threads on {s['cpus']} CPUs (shared machine, load average {before_after[0]:.1f} before and "
        f"{before_after[1]:.1f} after: read the ratios, not the absolute numbers). {s['rounds']} rounds of "
        f"{s['steps_per_round']} timed steps (forward + backward + AdamW step) per variant, the order rotating.",
        "",
        "| variant | s / image (median over rounds) | ratio to fcos (median of the rounds' ratios) | per round |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Over an A.3 schedule (ATSS for 4 of 30 epochs, task-aligned after): FCOS* takes "
        f"**{report['ratio_a3_schedule']:.3f}x** the time per image of plain FCOS.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 320])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--fpn-channels", type=int, default=256)
    args = parser.parse_args()
    report = run(args.data, args.rounds, args.steps, tuple(args.size), args.batch, args.fpn_channels)
    write_json(RESULTS / "fcos_star.json", report)
    with atomic_write(RESULTS / "fcos_star.md") as handle:
        handle.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
