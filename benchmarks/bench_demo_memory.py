"""Peak resident memory of `vito demo` (target: <= 4 GiB), measured in a child process.

    python benchmarks/bench_demo_memory.py [--max-steps N]

``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the largest resident set of any waited-for child
(and, transitively, of the data-loader workers it waited for); on Linux it is in KiB. Writes
benchmarks/results/demo_memory.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
TARGET_GIB = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="shorter demo (default: the demo's own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vito", "demo", "--out", out]
        if args.max_steps is not None:
            command += ["--max-steps", str(args.max_steps)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    result = {
        "benchmark": "vito demo peak resident memory",
        "command": " ".join(["vito", "demo"] + (["--max-steps", str(args.max_steps)] if args.max_steps else [])),
        "peak_rss_gib": round(peak_gib, 3),
        "target_gib": TARGET_GIB,
        "within_target": peak_gib <= TARGET_GIB,
        "wall_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
    }
    write_json(RESULTS / "demo_memory.json", result)
    with atomic_write(RESULTS / "demo_memory.md") as handle:
        handle.write("# `vito demo` peak memory\n\n| command | peak RSS (GiB) | target | wall (s) |\n|---|---|---|---|\n")
        handle.write(f"| `{result['command']}` | {result['peak_rss_gib']} | <= {TARGET_GIB} | {result['wall_seconds']} |\n")
    print(result)


if __name__ == "__main__":
    main()
