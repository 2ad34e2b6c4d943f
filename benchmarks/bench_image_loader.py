"""Worker CPU seconds per training sample from still images (the MoCLR image baseline), against a bare decode.

Pretraining on images reads each sample's image once and cuts its views from it (``ImageFolderSource``: the one
image reader ``vito.data.images``, then per view a crop and a flip). No image path can
avoid decoding the picture; this benchmark shows what the loader adds on top. Measured in this process and one
thread (like one DataLoader worker, without the DataLoader's transfer), on the shared ImageNet samples
(``$VITO_DATA/imagenet-sample-images``: 200 real JPEGs, median short side 375 px), with the ``moclr_r50``
preset's data settings (2 views, ``same`` sampling, 224-px crops of area 0.08..1, ``decode_short_side`` 256),
batches of 16:

- ``loader, image files``: ``PretrainBatches.batch`` on an ``ImageFolderSource`` of the folder (file reads from
  the page cache included);
- ``loader, image files, PIL decoding``: the same with the reader's simplejpeg path switched off, so that PIL
  decodes every JPEG (what the reader did before, and what torchvision's ImageFolder does);
- ``bare decode of the files``: ``simplejpeg.decode_jpeg`` of the same files at full size, their bytes read
  beforehand (untimed): the floor of any loader that decodes the whole picture;
- ``loader, image shards``: ``PretrainBatches.batch`` on shards ``vito prepare`` wrote from the same images
  (each image one JPEG frame at a 256-px short side, quality 90), and the reads it made per sample;
- ``bare decode of the stored frames``: ``simplejpeg.decode_jpeg`` of the frames the shard loader read.

CPU time (``time.process_time``) per sample, median of ``--rounds`` interleaved rounds (every contender makes the
same batches in each round; load from other processes falls on all of them alike).

    VITO_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_image_loader [--rounds 9]

Writes benchmarks/results/image_loader.json and image_loader.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
import torch

from benchmarks.report_files import save_report
from vito.config import load_config
from vito.data import images
from vito.data.pretrain_batches import PretrainBatches
from vito.data.shards.format import ShardSettings
from vito.data.shards.reader import ShardSource
from vito.data.shards.writer import write_shards
from vito.data.sources import open_source

BATCH = 16
CONTENDERS = ("loader, image files", "loader, image files, PIL decoding", "bare decode of the files",
              "loader, image shards", "bare decode of the stored frames")


@contextlib.contextmanager
def pil_decoding() -> Iterator[None]:
    """The image reader without its simplejpeg path: PIL decodes every JPEG."""
    fast, images.simplejpeg = images.simplejpeg, None
    try:
        yield
    finally:
        images.simplejpeg = fast


@contextlib.contextmanager
def counting_reads(counter: list[int]) -> Iterator[None]:
    """Count the positional reads the shard reader makes (``os.pread``), to check one read per sample."""
    real = os.pread

    def pread(*args):
        counter[0] += 1
        return real(*args)

    os.pread = pread
    try:
        yield
    finally:
        os.pread = real


def stored_frames(shards: ShardSource, indices: list[int]) -> list[bytes]:
    """The stored JPEG frame of each image (one frame per image: every view is cut from it)."""
    return [shards.read_jpegs(i, lambda duration: np.zeros(1))[0][0] for i in indices]


def cpu_seconds(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def decode_all(jpegs: list[bytes]) -> None:
    for data in jpegs:  # each decoded and dropped, as in bench_loader_cost
        simplejpeg.decode_jpeg(data, "rgb")


def measure(files: PretrainBatches, shards: PretrainBatches, rounds: int, steps_per_round: int
            ) -> tuple[dict[str, list[float]], float]:
    """CPU seconds per sample of each contender in each round, and the shard loader's reads per sample."""
    per_sample: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    reads = [0]
    for r in range(rounds):
        steps = range(1 + r * steps_per_round, 1 + (r + 1) * steps_per_round)
        indices = [files.video_for(step, slot) for step in steps for slot in range(BATCH)]
        assert indices == [shards.video_for(step, slot) for step in steps for slot in range(BATCH)]
        file_bytes = [Path(files.source.name(i)).read_bytes() for i in indices]  # untimed
        frames = stored_frames(shards.source, indices)
        work = {
            "loader, image files": lambda: [files.batch(step) for step in steps],
            "loader, image files, PIL decoding": lambda: [files.batch(step) for step in steps],
            "bare decode of the files": lambda: decode_all(file_bytes),
            "loader, image shards": lambda: [shards.batch(step) for step in steps],
            "bare decode of the stored frames": lambda: decode_all(frames),
        }
        for name in CONTENDERS if r % 2 == 0 else reversed(CONTENDERS):  # alternate who goes first
            with pil_decoding() if "PIL" in name else contextlib.nullcontext():
                with counting_reads(reads) if name == "loader, image shards" else contextlib.nullcontext():
                    per_sample[name].append(cpu_seconds(work[name]) / len(indices))
    return per_sample, reads[0] / (rounds * steps_per_round * BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median reported)")
    parser.add_argument("--steps", type=int, default=4, help=f"batches of {BATCH} samples per contender and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    folder = Path(os.environ.get("VITO_DATA", "../shared/data")) / "imagenet-sample-images"
    data = load_config("moclr_r50", [f"data.batch_size={BATCH}", "data.num_workers=0"]).data
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(folder, Path(tmp) / "shards", ShardSettings(short_side=data.decode_short_side, quality=90),
                     progress=False)
        files = PretrainBatches(open_source(folder), data, seed=0, batch_size=BATCH)
        shards = PretrainBatches(ShardSource(Path(tmp) / "shards"), data, seed=0, batch_size=BATCH)
        files.batch(0), shards.batch(0)  # warm-up: files in the page cache, shard index loaded
        rounds, reads_per_sample = measure(files, shards, args.rounds, args.steps)
        count, shard_bytes = len(files.source), (Path(tmp) / "shards" / "shard-000000.tar").stat().st_size
    median = {name: statistics.median(values) for name, values in rounds.items()}
    report = {
        "what": f"worker CPU seconds per sample from still images, moclr_r50 data settings ({data.num_views} views, "
                f"{data.image_size}-px crops of area {data.crop_min_scale}..1; from files: of the picture as "
                f"decoded, a JPEG at the DCT scale keeping its short side >= {data.decode_short_side} px; from "
                f"shards: of the stored {data.decode_short_side}-px frame), batch {BATCH}, 1 process, 1 thread",
        "images": count,
        "image_bytes": sum(path.stat().st_size for path in folder.iterdir()),
        "shard_bytes": shard_bytes,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "ms_per_sample": {name: round(1e3 * value, 3) for name, value in median.items()},
        "ms_per_sample_rounds": {name: [round(1e3 * v, 3) for v in values] for name, values in rounds.items()},
        "files_loader_x_bare_decode": round(median["loader, image files"] / median["bare decode of the files"], 3),
        "files_pil_loader_x_bare_decode": round(median["loader, image files, PIL decoding"]
                                                / median["bare decode of the files"], 3),
        "shards_loader_x_bare_decode": round(median["loader, image shards"]
                                             / median["bare decode of the stored frames"], 3),
        "shard_reads_per_sample": reads_per_sample,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, "
                   f"1-min load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
                   f"OpenCV {cv2.__version__}, simplejpeg {simplejpeg.__version__}",
    }
    save_report("image_loader", report, markdown(report))


def markdown(report: dict) -> str:
    bare = {"loader, image files": "bare decode of the files",
            "loader, image files, PIL decoding": "bare decode of the files",
            "loader, image shards": "bare decode of the stored frames"}
    lines = [
        "# Loader worker CPU per sample from still images vs a bare decode\n",
        f"{report['what']}; the {report['images']} shared ImageNet samples ({report['image_bytes'] / 1e6:.1f} MB; "
        f"as shards {report['shard_bytes'] / 1e6:.1f} MB) ({report['machine']}); median of {report['rounds']} "
        f"interleaved rounds of {report['steps_per_round']} batches.\n",
        "| path | CPU ms / sample | x its bare decode |",
        "|---|---|---|",
    ]
    ms = report["ms_per_sample"]
    for name, value in ms.items():
        ratio = f"{value / ms[bare[name]]:.2f}x" if name in bare else "1.00x"
        lines.append(f"| {name} | {value} | {ratio} |")
    lines.append(f"\nThe shard loader made {report['shard_reads_per_sample']:g} read(s) per sample. The file loader's "
                 "figure includes opening and reading each file (from the page cache); the bare decodes read "
                 "bytes in memory.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
