"""Start-up time of the command line: `vito --help` and `vito eval davis --help` against `python -c "import torch"`.

Every command is a fresh interpreter, so its start-up is paid by every `vito` call and every test that runs one
in a subprocess. The reference is the cost of importing torch, which any command that computes pays anyway.
Rounds are interleaved (each round runs every command once, in turn) so that a change of machine load hits all
commands alike, and the reported ratio is the median over rounds of that round's ratio.

    .venv/bin/python -m benchmarks.bench_cli_startup [--rounds 9] [--compare OTHER_SRC --compare-label NAME]

``--compare`` also times the same `vito` commands from another source tree (its ``src`` folder, put first on
``PYTHONPATH``) in the same rounds, e.g. the main branch before a change. Writes benchmarks/results/
cli_startup.json and cli_startup.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from vito.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
SOURCE = Path(__file__).resolve().parents[1] / "src"
REFERENCE = "python -c 'import torch'"
COMMANDS = {"vito --help": ["--help"], "vito eval davis --help": ["eval", "davis", "--help"]}


def _seconds(argv: list[str], source: Path | None) -> float:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure(rounds: int, trees: dict[str, Path]) -> dict[str, list[float]]:
    """Seconds per round of the reference and of each command from each tree (one warm-up round, not kept)."""
    runs = {REFERENCE: ([sys.executable, "-c", "import torch"], None)}
    for label, source in trees.items():
        runs.update({f"{name} [{label}]": ([sys.executable, "-m", "vito", *args], source)
                     for name, args in COMMANDS.items()})
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds + 1):
        for name, (argv, source) in runs.items():
            seconds = _seconds(argv, source)
            if round_index > 0:
                times[name].append(seconds)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    reference = times[REFERENCE]
    summary = {}
    for name, seconds in times.items():
        ratios = [s / r for s, r in zip(seconds, reference)]
        summary[name] = {"median_seconds": statistics.median(seconds), "min_seconds": min(seconds),
                         "median_ratio_to_import_torch": statistics.median(ratios),
                         "ratio_range": [min(ratios), max(ratios)]}
    return summary


def write_markdown(report: dict) -> None:
    lines = ["# Command-line start-up", "",
             f"{report['rounds']} interleaved rounds on {report['cpus']} CPUs (load average "
             f"{report['load_before']:.1f} before, {report['load_after']:.1f} after); python {report['python']}, "
             f"torch {report['torch']}, bytecode cache {report['bytecode_cache']}. "
             "Ratio: the median over rounds of (command / `import torch` in the same round).", "",
             "| command | median s | min s | × import torch (median) | range over rounds |", "|---|---|---|---|---|"]
    for name, row in report["summary"].items():
        low, high = row["ratio_range"]
        lines.append(f"| `{name}` | {row['median_seconds']:.2f} | {row['min_seconds']:.2f} | "
                     f"{row['median_ratio_to_import_torch']:.2f} | {low:.2f}–{high:.2f} |")
    lines += ["", "Goal (issue 20): `vito --help` at most 1.5 × `import torch`."]
    with atomic_write(RESULTS / "cli_startup.md") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9), after one warm-up")
    parser.add_argument("--compare", type=Path, default=None, help="another source tree's src folder, timed too")
    parser.add_argument("--compare-label", default="compared", help="its label in the results (default: compared)")
    args = parser.parse_args(argv)
    trees = {"this tree": SOURCE, **({args.compare_label: args.compare} if args.compare is not None else {})}
    load_before = os.getloadavg()[0]
    times = measure(args.rounds, trees)
    report = {"rounds": args.rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
              "torch": version("torch"),
              "bytecode_cache": "not written (PYTHONDONTWRITEBYTECODE; existing .pyc read)"
              if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on",
              "load_before": load_before, "load_after": os.getloadavg()[0],
              "trees": {label: str(path) for label, path in trees.items()}, "summary": summarise(times),
              "seconds": times}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "cli_startup.json", report)
    write_markdown(report)
    for name, row in report["summary"].items():
        print(f"{name}: {row['median_seconds']:.2f} s, {row['median_ratio_to_import_torch']:.2f} x import torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
