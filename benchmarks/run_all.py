"""`make bench`: run every benchmark of this folder (``bench_*.py``), each in its own process, with its defaults.

Each benchmark writes its own result files to ``benchmarks/results/``; this runner only starts them in turn,
prints how each ended and how long it took, and exits non-zero when any failed (the others still run).
``--only NAME`` (repeatable) picks some, ``--list`` names them without running anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> list[str]:
    """Module names of every benchmark script, sorted (``bench_davis``, ``bench_loader``, ...)."""
    return sorted(path.stem for path in HERE.glob("bench_*.py"))


def run(names: list[str]) -> dict[str, tuple[int, float]]:
    """Run each benchmark as ``python -m benchmarks.NAME`` from the repository root: (exit status, seconds)."""
    outcomes = {}
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        status = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        outcomes[name] = (status, time.perf_counter() - started)
        print(f"== {name}: {'ok' if status == 0 else f'FAILED (exit {status})'} in {outcomes[name][1]:.0f} s",
              flush=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    parser.add_argument("--list", action="store_true", help="name the benchmarks and stop")
    args = parser.parse_args(argv)
    known = benchmarks()
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.list:
        print("\n".join(known))
        return 0
    outcomes = run(args.only or known)
    failed = [name for name, (status, _) in outcomes.items() if status != 0]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} benchmarks ok" + (f"; failed: {', '.join(failed)}"
                                                                              if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
