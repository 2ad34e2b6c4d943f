"""DAVIS label propagation speed at 480p, and frozen-feature extraction speed, with a random-init ResNet-50.

Propagation follows the evaluation exactly (res4 at stride 8: a 60x107 grid at 480x854, first frame +
20 preceding frames, top-10, radius 18); only the first ``--frames`` frames of one sequence are used so
that a CPU run stays short, and one more frame is propagated from a full 21-frame context (the steady
state of a long sequence). Time is split into encoding (the ResNet-50 up to res4) and propagation
(affinities, top-k, label mixing), because they scale differently (the second grows with the context).

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_davis [--frames 4] [--device auto]

Writes benchmarks/results/davis.json and davis.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from vito.eval.core.encoder_spec import inference_mode, pick_device
from vito.eval.core.encoders import load_encoder
from vito.eval.video.davis_data import find_sequences, read_object_ids
from vito.eval.video.davis_propagation import (
    PropagationSettings,
    first_frame_labels,
    frame_features,
    propagate_features,
    propagate_frame,
)
from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_propagation(encoder, sequence, frames: int, device: torch.device) -> dict:
    settings = PropagationSettings(max_frames=frames)
    paths = sequence.frames[:frames]
    features = list(frame_features(encoder, paths[:1], settings))  # warm-up
    _sync(device)
    started = time.perf_counter()
    features = list(frame_features(encoder, paths, settings))
    _sync(device)
    encode_s = time.perf_counter() - started
    first = read_object_ids(sequence.annotations[0])
    started = time.perf_counter()
    predictions = propagate_features(features, first, settings)
    _sync(device)
    propagate_s = time.perf_counter() - started
    return {
        "sequence": sequence.name, "frames": len(paths), "feature_grid": list(features[0].shape[1:]),
        "encode_frames_per_s": len(paths) / encode_s,
        "propagate_frames_per_s": (len(predictions) - 1) / propagate_s,
        "total_frames_per_s": len(paths) / (encode_s + propagate_s),
        "full_context": bench_full_context(features, first, settings, device),
        "note": "propagation per frame grows with the context until it holds 21 frames (frame 20 on)",
    }


def bench_full_context(features: list, first, settings: PropagationSettings, device: torch.device) -> dict:
    """One frame propagated from a full context (the first frame + 20 preceding ones): the cost of every
    frame from frame 20 on. The sequence's features are reused cyclically as context; the cost does not
    depend on their content. CPU seconds are reported too: on a shared machine they show how much of the
    wall time this process actually ran."""
    labels = first_frame_labels(first, tuple(features[0].shape[1:]), int(first.max()) + 1).to(features[0].device)
    context = [features[i % len(features)] for i in range(settings.context + 1)]
    started, cpu_started = time.perf_counter(), time.process_time()
    propagate_frame(features[-1], context, [labels] * len(context), settings)
    _sync(device)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"context_frames": len(context), "frames_per_s": 1 / wall, "cpu_seconds_per_frame": cpu}


def bench_extraction(encoder, device: torch.device, batch: int, repeats: int) -> dict:
    images = torch.randn(batch, 3, 224, 224, device=device)
    with inference_mode(device):
        encoder.embed(images)
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            encoder.embed(images)
        _sync(device)
    return {"batch": batch, "image_size": 224, "images_per_s": batch * repeats / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames of the sequence to propagate through")
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16, help="images per batch for feature extraction")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = pick_device(args.device)
    root = Path(os.environ.get("VITO_DATA", "../shared/data")) / "davis2016_sample"
    sequence = find_sequences(root, names=[args.sequence])[0]

    extractor = load_encoder("timm:resnet50", device=device)
    extraction = bench_extraction(extractor, device, args.batch, args.repeats)
    propagator = load_encoder("timm:resnet50", device=device)
    propagator.remove_stride(-2)
    propagation = bench_propagation(propagator, sequence, args.frames, device)

    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32",
        "encoder": "timm:resnet50 (random init)", "propagation": propagation, "feature_extraction": extraction,
        "load_average_1min": os.getloadavg()[0],  # a shared machine: other work slows the numbers down
    }
    full = propagation["full_context"]
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "davis.json", report)
    lines = [
        "# DAVIS propagation and feature extraction speed", "",
        f"Device: {report['device']}, {report['precision']}, torch {report['torch']}. "
        f"Encoder: {report['encoder']}.", "",
        "| measurement | value |", "|---|---|",
        f"| propagation input | {propagation['sequence']}, {propagation['frames']} frames at 480x854, "
        f"feature grid {propagation['feature_grid']} |",
        f"| encoding (res4, stride 8) | {propagation['encode_frames_per_s']:.2f} frames/s |",
        f"| propagation (top-10, radius 18) | {propagation['propagate_frames_per_s']:.2f} frames/s |",
        f"| propagation total | {propagation['total_frames_per_s']:.2f} frames/s |",
        f"| propagation with the full context ({full['context_frames']} frames, every frame from frame 20 on) | "
        f"{full['frames_per_s']:.2f} frames/s ({full['cpu_seconds_per_frame']:.1f} CPU s per frame) |",
        f"| feature extraction (embed, 224 px, batch {extraction['batch']}) | "
        f"{extraction['images_per_s']:.1f} images/s |", "",
        f"Note: {propagation['note']}. Load average during the run: {report['load_average_1min']:.2f}.",
    ]
    with atomic_write(RESULTS / "davis.md") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
