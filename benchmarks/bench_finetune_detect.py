"""Detection fine-tuning throughput: vito's fine-tune loop against a plain loop, and inference images/s.

Both loops train the same model (plain FCOS, ``--head fcos``, with an FPN on a ResNet-18, same seed:
``build_detector``; FCOS* against FCOS is ``bench_fcos_star``), on the same
deterministic batches (``DetectionBatches`` over the 43 shared COCO images, the A.3 train views at a small
target resolution), with the same AdamW and A.3 learning-rate schedule, on the CPU in fp32 (what the loop
picks on a CPU):

- ``vito``: ``vito.engine.finetune.finetune`` in a fresh run folder (run-folder lock, stop-signal handling,
  logging to metrics.jsonl/TensorBoard every ``log_every`` steps, the process-count-independent loss
  normaliser of ``GlobalFCOSHead``);
- ``plain``: ``losses = model(images, targets); loss = sum(losses.values()); zero_grad; backward; step``
  with torchvision's own ``FCOSHead`` (same weights).

A step's time is the interval between two consecutive batches drawn by the loop (everything it does per
step, data included); the first step of each round is a warm-up and the final checkpoint of the vito run a
one-off cost, both left out (each loop runs steps + 2 steps). Rounds alternate which loop runs first; each
round gives images/s = batch / median step time; the report gives the median over rounds and the ratio.
Inference: ``predict`` (eval view, batched, boxes mapped back to the original pixels) over val images.

    .venv/bin/python -m benchmarks.bench_finetune_detect [--rounds 5] [--steps 4] [--size 96 128] [--batch 4]

The FPN/head width is reduced (``--fpn-channels``, 64 by default; 256 in FCOS) so that the rounds fit the
shared 2-core machine; both loops use the same model. Needs the shared data ($VITO_DATA). Writes
benchmarks/results/finetune_detect.json and .md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision.models.detection.fcos import FCOSHead

from benchmarks.bench_finetune_segment import Timed
from benchmarks.loop_vs_plain import comparison_lines, interleaved_rounds, machine, method_sentence, summary
from vito.engine import distributed
from vito.engine.finetune import FinetuneSpec, finetune
from vito.eval.core.encoders import load_encoder
from vito.eval.dense.detection.data import DetectionImages, collate_detection, load_annotations
from vito.eval.dense.detection.recipe import (
    CHECKPOINT_FORMAT,
    DetectionBatches,
    FinetunePlan,
    as_float,
    build_detector,
    detection_loss,
    lr_factor,
    make_optimizer,
    predict,
)
from vito.eval.dense.detection.settings import DetectSettings
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"


def make_plan(size: tuple[int, int], batch: int, steps: int, fpn_channels: int) -> FinetunePlan:
    settings = DetectSettings(dataset="coco", val_ann=Path("unused"), resolution=size, batch_size=batch,
                              weight_decay=1e-4, flip=True, fpn_channels=fpn_channels, head="fcos")
    return FinetunePlan(settings, seed=0, steps=steps, warmup_steps=1, lr=1e-4)


def vito_round(encoder, annotations, images, plan: FinetunePlan, tmp: Path) -> list[float]:
    model = build_detector(encoder, len(annotations.categories), plan)
    optimizer = make_optimizer(model, plan)
    timer = Timed()
    context = distributed.Context(0, 1, 0, torch.device("cpu"))
    spec = FinetuneSpec(CHECKPOINT_FORMAT, plan.steps, {"bench": time.time()}, checkpoint_every=10**9,
                        precision="fp32")
    stream = DetectionBatches(images, plan.settings.batch_size, plan.seed, 0)
    finetune(model, detection_loss, optimizer, lambda s: plan.lr * lr_factor(s, plan.steps, plan.warmup_steps),
             lambda start: timer.wrap(iter(stream)), Path(tempfile.mkdtemp(dir=tmp)), spec, context)
    return timer.step_times()


def plain_round(encoder, annotations, images, plan: FinetunePlan) -> list[float]:
    model = build_detector(encoder, len(annotations.categories), plan)
    head = FCOSHead(plan.settings.fpn_channels, 1, len(annotations.categories))
    head.load_state_dict(model.head.state_dict())
    model.head = head
    optimizer = make_optimizer(model, plan)
    model.train()
    timer = Timed()
    stream = timer.wrap(iter(DetectionBatches(images, plan.settings.batch_size, plan.seed, 0)))
    for step, batch in zip(range(plan.steps), stream):
        for group in optimizer.param_groups:
            group["lr"] = plan.lr * lr_factor(step, plan.steps, plan.warmup_steps)
        losses = model(as_float(batch["images"]), batch["targets"])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    next(stream)  # closes the last step's interval, as in the vito round
    return timer.step_times()


def inference(encoder, annotations, images_dir: Path, plan: FinetunePlan, count: int, batch: int) -> dict:
    model = build_detector(encoder, len(annotations.categories), plan)
    dataset = DetectionImages(annotations, images_dir, train=False, canvas=plan.canvas)
    loader = DataLoader(Subset(dataset, range(count)), batch_size=batch, collate_fn=collate_detection)
    predict(model, DataLoader(Subset(dataset, range(batch)), batch_size=batch, collate_fn=collate_detection),
            annotations, torch.device("cpu"), "fp32")  # warm-up
    begin = time.perf_counter()
    results, used, _, _ = predict(model, loader, annotations, torch.device("cpu"), "fp32")
    seconds = time.perf_counter() - begin
    return {"images": len(used), "seconds": seconds, "images_per_s": len(used) / seconds,
            "detections": len(results), "batch": batch}


def run(shared: Path, rounds: int, steps: int, size: tuple[int, int], batch: int, fpn_channels: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    coco = shared / "detection" / "coco"
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    plan = make_plan(size, batch, steps + 2, fpn_channels)
    images = DetectionImages(annotations, coco / "images", train=True, canvas=size, seed=0)
    encoder = load_encoder("torchvision:resnet18")
    load_before = os.getloadavg()[0]
    per_round = interleaved_rounds(rounds, batch, {
        "vito": lambda: vito_round(encoder, annotations, images, plan, tmp),
        "plain": lambda: plain_round(encoder, annotations, images, plan)})
    return {
        "setup": {"model": f"FCOS (FPN width {fpn_channels}) on torchvision:resnet18", "size": list(size),
                  "batch": batch, "rounds": rounds, "steps_per_round": steps, "precision": "fp32",
                  **machine(load_before)},
        **summary(per_round),
        "inference": inference(encoder, annotations, coco / "images", plan, count=12, batch=batch),
    }


def markdown(report: dict) -> str:
    s, inf = report["setup"], report["inference"]
    return "\n".join([
        "# Detection fine-tuning throughput: vito's loop vs a plain loop",
        "",
        f"{s['model']}, {s['batch']} images per step at {s['size'][0]}x{s['size'][1]} (A.3 train views), "
        + method_sentence(s),
        "",
        *comparison_lines(report),
        "",
        f"Inference (`predict`: eval view, batches of {inf['batch']}, boxes back in original pixels): "
        f"**{inf['images_per_s']:.3f} images/s** over {inf['images']} images ({inf['detections']} detections).",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--fpn-channels", type=int, default=64)
    args = parser.parse_args()
    report = run(args.data, args.rounds, args.steps, tuple(args.size), args.batch, args.fpn_channels)
    write_json(RESULTS / "finetune_detect.json", report)
    with atomic_write(RESULTS / "finetune_detect.md") as handle:
        handle.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
