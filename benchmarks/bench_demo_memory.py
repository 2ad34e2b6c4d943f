"""Peak resident memory of `vito demo` (target: <= 4 GiB), measured over the whole process tree.

    python benchmarks/bench_demo_memory.py [--max-steps N] [--interval 0.1]

The demo trains with DataLoader workers: separate processes that live at the same time as the main one, so
the memory the demo needs is the *sum* over its process tree, at the same moment. ``getrusage`` cannot give
that (its ``ru_maxrss`` is the peak of the single largest process), so a sampler walks the tree through
``/proc`` every ``--interval`` seconds and records, per sample:

- ``VmRSS`` summed over the live processes: the tree's resident memory at that moment (pages shared by a
  worker and its parent count twice, so this over- rather than under-states);
- ``VmHWM`` (each process's own peak so far, kept by the kernel) summed over the live processes: an upper
  bound of the tree's true peak that a short spike between two samples cannot escape.

The target is checked against the upper bound. Linux only. Writes benchmarks/results/demo_memory.json and .md.
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
KIB_PER_GIB = 2**20


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent ids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # the name in (...) may contain spaces
        except OSError:  # the process ended while we listed it
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def memory_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of one process in KiB; zeros if it has ended."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")}
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def watch(process: subprocess.Popen, interval: float) -> dict[str, float]:
    """Samples the tree until ``process`` exits; returns the peaks in GiB and the most processes seen at once."""
    peak_rss = peak_hwm = most = 0
    while process.poll() is None:
        tree = descendants(process.pid)
        samples = [memory_kib(pid) for pid in tree]
        peak_rss = max(peak_rss, sum(rss for rss, _ in samples))
        peak_hwm = max(peak_hwm, sum(hwm for _, hwm in samples))
        most = max(most, sum(1 for rss, _ in samples if rss))
        time.sleep(interval)
    return {"tree_rss_sampled_gib": peak_rss / KIB_PER_GIB, "tree_hwm_bound_gib": peak_hwm / KIB_PER_GIB,
            "processes_at_once": most}


def markdown(result: dict) -> str:
    verdict = "within" if result["within_target"] else "over"
    return "\n".join([
        "# `vito demo` peak memory",
        "",
        f"`{result['command']}`, {result['wall_seconds']} s (on a machine shared with other jobs: the time depends "
        f"on their load, the memory does not). Memory of the whole process tree (the demo and its "
        f"DataLoader workers, up to {result['processes_at_once']} processes at once), sampled every "
        f"{result['interval_s']} s from /proc.",
        "",
        "| measure | GiB |",
        "|---|---|",
        f"| tree peak, upper bound (sum of each live process's own peak VmHWM) | **{result['peak_rss_gib']:.3f}** |",
        f"| tree peak, sampled (sum of VmRSS at one moment) | {result['tree_rss_sampled_gib']:.3f} |",
        f"| largest single process (ru_maxrss) | {result['largest_process_gib']:.3f} |",
        "",
        f"Upper bound {result['peak_rss_gib']:.3f} GiB: {verdict} the target <= {result['target_gib']} GiB. Pages "
        "a worker shares with its parent (libraries, the model) are counted in each process, so the true figure "
        "is lower.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="shorter demo (default: the demo's own)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples of the process tree")
    args = parser.parse_args()
    extra = ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "vito", "demo", "--out", out, *extra],
                                   stdout=subprocess.DEVNULL)
        peaks = watch(process, args.interval)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"vito demo failed with exit status {process.returncode}")
    bound = peaks["tree_hwm_bound_gib"]
    result = {
        "benchmark": "vito demo peak resident memory (process tree)",
        "command": " ".join(["vito", "demo", *extra]),
        "peak_rss_gib": round(bound, 3),
        **{k: round(v, 3) for k, v in peaks.items() if k != "tree_hwm_bound_gib"},
        "largest_process_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / KIB_PER_GIB, 3),
        "interval_s": args.interval,
        "target_gib": TARGET_GIB,
        "within_target": bound <= TARGET_GIB,
        "wall_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
    }
    write_json(RESULTS / "demo_memory.json", result)
    with atomic_write(RESULTS / "demo_memory.md") as handle:
        handle.write(markdown(result))
    print(result)


if __name__ == "__main__":
    main()
