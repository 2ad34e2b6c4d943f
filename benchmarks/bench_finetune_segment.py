"""Segmentation fine-tuning throughput: vito's fine-tune loop against a plain loop, and inference images/s.

Both loops train the same model (the VOC protocol's dilated FCN on a ResNet-18, same seed), on the same
deterministic batches (``SegmentationBatches`` over the shared VOC images, in this process), with the same
SGD and lr schedule, on the CPU in fp32 (what the loop picks on a CPU):

- ``vito``: ``vito.engine.finetune.finetune`` in a fresh run folder (run-folder lock, stop-signal handling,
  logging to metrics.jsonl/TensorBoard every ``log_every`` steps, the process-count-independent loss);
- ``plain``: ``loss = segmentation_loss(model, batch)["loss"]; zero_grad; backward; step``.

A step's time is the interval between two consecutive batches drawn by the loop (everything it does per
step, data included); the first step of each round is a warm-up and the checkpoint written at the end of
the vito run is a one-off cost, both left out (each loop runs steps + 2 steps). Rounds alternate which loop runs first; each round gives
images/s = batch / median step time, and the report gives the median over rounds and the ratio.
Inference: ``predict_image`` (centre-pad, logits at the original size, argmax) on the val images.

    .venv/bin/python -m benchmarks.bench_finetune_segment [--rounds 5] [--steps 6] [--crop 97] [--batch 4]

Needs the shared data ($VITO_DATA). Writes benchmarks/results/finetune_segment.json and .md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.loop_vs_plain import comparison_lines, interleaved_rounds, machine, method_sentence, summary
from vito.data.images import read_rgb
from vito.engine import distributed
from vito.engine.finetune import FinetuneSpec, finetune
from vito.eval.core.encoders import load_encoder
from vito.eval.core.registry import settings_from_mapping
from vito.eval.dense.segmentation.augment import SegmentationBatches
from vito.eval.dense.segmentation.data import open_dataset
from vito.eval.dense.segmentation.recipe import (
    build_model,
    learning_rate,
    make_optimizer,
    predict_image,
    segmentation_loss,
)
from vito.eval.dense.segmentation.segment import Segment, protocol_for
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
LR = 0.01
VOC_IDS = ("2007_000033", "2007_000129")


def voc_layout(shared: Path, tmp: Path) -> Path:
    """The two shared VOC images as VOCdevkit/VOC2012 (symlinks), train = val = both."""
    source = shared / "segmentation" / "voc2012"
    base = tmp / "VOCdevkit" / "VOC2012"
    for folder, suffix in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (base / folder).mkdir(parents=True)
        for i in VOC_IDS:
            (base / folder / f"{i}.{suffix}").symlink_to(source / folder / f"{i}.{suffix}")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("trainaug", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(VOC_IDS) + "\n")
    return tmp / "VOCdevkit"


class Timed:
    """Wraps a batch stream and records when each batch is handed out (one interval = one loop step)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def wrap(self, batches: Iterator) -> Iterator:
        for batch in batches:
            self.stamps.append(time.perf_counter())
            yield batch

    def step_times(self) -> list[float]:
        """Intervals without the first (warm-up) and the last (the vito run's final checkpoint) step."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])][1:-1]


def build(protocol, encoder):
    torch.manual_seed(0)
    model = build_model(encoder, protocol, 21)
    return model, make_optimizer(model, LR, protocol)


def vito_round(protocol, encoder, train, steps: int, batch: int, tmp: Path) -> list[float]:
    model, optimizer = build(protocol, encoder)
    timer = Timed()
    context = distributed.Context(0, 1, 0, torch.device("cpu"))
    spec = FinetuneSpec("vito-segment/1", steps + 2, {"bench": time.time()}, checkpoint_every=10**9)
    stream = SegmentationBatches(train, protocol.augment, 0, batch)
    # the loop draws one batch past its last step (and stops): that closes the last step's interval
    finetune(model, segmentation_loss, optimizer, lambda s: learning_rate(s, LR, protocol, steps + 2),
             lambda start: timer.wrap(iter(stream)), Path(tempfile.mkdtemp(dir=tmp)), spec, context)
    return timer.step_times()


def plain_round(protocol, encoder, train, steps: int, batch: int) -> list[float]:
    model, optimizer = build(protocol, encoder)
    model.train()
    timer = Timed()
    stream = timer.wrap(iter(SegmentationBatches(train, protocol.augment, 0, batch)))
    for step, data in zip(range(steps + 2), stream):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, LR, protocol, steps + 2)
        loss = segmentation_loss(model, data)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    next(stream)  # closes the last step's interval, as in the vito round
    return timer.step_times()


def inference(protocol, encoder, val, repeats: int) -> dict:
    model, _ = build(protocol, encoder)
    images = [read_rgb(item.image) for item in val.items]
    predict_image(model, images[0], protocol, torch.device("cpu"), "fp32")  # warm-up
    begin = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            predict_image(model, image, protocol, torch.device("cpu"), "fp32")
    seconds = time.perf_counter() - begin
    return {"images": repeats * len(images), "seconds": seconds, "images_per_s": repeats * len(images) / seconds,
            "sizes": [list(image.shape[:2]) for image in images]}


def run(shared: Path, rounds: int, steps: int, crop: int, batch: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    root = voc_layout(shared, tmp)
    settings = settings_from_mapping(Segment, {"dataset": "voc", "root": root, "crop_size": crop})
    protocol = protocol_for(settings)
    train, val = open_dataset("voc", root, "trainaug"), open_dataset("voc", root, "val")
    encoder = load_encoder("timm:resnet18")
    load_before = os.getloadavg()[0]
    per_round = interleaved_rounds(rounds, batch, {
        "vito": lambda: vito_round(protocol, encoder, train, steps, batch, tmp),
        "plain": lambda: plain_round(protocol, encoder, train, steps, batch)})
    return {
        "setup": {"model": "DilatedFCN on timm:resnet18 (res5 dilated)", "crop": crop, "batch": batch,
                  "rounds": rounds, "steps_per_round": steps, "precision": "fp32", **machine(load_before)},
        **summary(per_round),
        "inference": inference(protocol, encoder, val, repeats=3),
    }


def markdown(report: dict) -> str:
    s, inf = report["setup"], report["inference"]
    return "\n".join([
        "# Segmentation fine-tuning throughput: vito's loop vs a plain loop",
        "",
        f"{s['model']}, {s['batch']} crops of {s['crop']} px per step, " + method_sentence(s),
        "",
        *comparison_lines(report),
        "",
        f"Inference (`predict_image`: centre-pad, whole image, logits at the original size, argmax): "
        f"**{inf['images_per_s']:.3f} images/s** over {inf['images']} predictions of images "
        f"{', '.join('x'.join(map(str, size)) for size in inf['sizes'])} (H x W).",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("VITO_DATA", "../shared/data")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--crop", type=int, default=97)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    report = run(args.data, args.rounds, args.steps, args.crop, args.batch)
    write_json(RESULTS / "finetune_segment.json", report)
    with atomic_write(RESULTS / "finetune_segment.md") as handle:
        handle.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
