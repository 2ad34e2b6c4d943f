"""Does `vito demo` show learning? Its held-out measure for random init vs trained, over several seeds.

    python -m benchmarks.bench_demo_measure [--seeds 0 1 2] [--max-steps N]

Each seed is one full `vito demo` run in a subprocess (``train.seed=S``: the initialisation, the data order
and the augmentations; the rendered world is the same for every seed), so the same runs also give the
demo's CPU time (user + system of the demo and its DataLoader workers, from ``getrusage`` of the finished
child: on a shared machine wall time means little) and its peak memory (the process tree sampled from
/proc, as bench_demo_memory.py does).

The issue's targets, on the mean over seeds: random init at most twice chance, trained at least 25 points
above random init; CPU time at most 600 s; peak memory at most 4 GiB.
Writes benchmarks/results/demo_measure.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_demo_memory import KIB_PER_GIB, TARGET_GIB, descendants, memory_kib
from vito.config import load_config
from vito.demo import measure_frames, subject_retrieval
from vito.engine.checkpoint import load_checkpoint
from vito.io import atomic_write, write_json
from vito.models.vito import build_vito

RESULTS = Path(__file__).parent / "results"
CPU_TARGET_S = 600.0
MARGIN_POINTS = 25.0


def run_and_watch(command: list[str], env: dict[str, str], interval: float = 0.2) -> tuple[float, float]:
    """Runs ``command``; returns (CPU seconds of it and its waited-for children, peak GiB of its process tree).

    ``os.wait4`` gives the rusage of this one child, so runs of several seeds side by side are told apart
    (``getrusage(RUSAGE_CHILDREN)`` would sum them). The peak is the sum of each live process's VmHWM, the
    upper bound bench_demo_memory.py reports.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    peak = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, sum(memory_kib(p)[1] for p in descendants(process.pid)))
        time.sleep(interval)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return usage.ru_utime + usage.ru_stime, peak / KIB_PER_GIB


def run_seed(seed: int, max_steps: int | None, out: Path, threads: int | None) -> dict:
    """One `vito demo` run; its result.json plus CPU seconds and peak memory of its process tree."""
    extra = ["--max-steps", str(max_steps)] if max_steps is not None else []
    command = [sys.executable, "-m", "vito", "demo", "--out", str(out), *extra, f"train.seed={seed}"]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    started = time.perf_counter()
    cpu, peak = run_and_watch(command, env)
    result = json.loads((out / "result.json").read_text())
    return {"seed": seed, "random_init": result["random_init"], "trained": result["trained"],
            "chance": result["chance"], "steps": result["steps"], "final_loss": result["final_loss"],
            "cpu_seconds": round(cpu, 1), "cpu_seconds_reported": result["cpu_seconds"], "peak_gib": round(peak, 3),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def summary(rows: list[dict]) -> dict:
    mean = {key: statistics.fmean(r[key] for r in rows) for key in ("random_init", "trained", "chance")}
    return {
        **mean,
        "margin_points": 100 * (mean["trained"] - mean["random_init"]),
        "random_within_twice_chance": mean["random_init"] <= 2 * mean["chance"],
        "trained_25_points_above": 100 * (mean["trained"] - mean["random_init"]) >= MARGIN_POINTS,
        "max_cpu_seconds": max(r["cpu_seconds"] for r in rows),
        "max_peak_gib": max(r["peak_gib"] for r in rows),
    }


def markdown(result: dict) -> str:
    rows, s = result["runs"], result["summary"]
    lines = [
        "# `vito demo`: held-out subject retrieval, random init vs trained",
        "",
        f"`{result['command']}` once per seed. Measure: {result['metric']}; chance = 1 / number of videos.",
        "",
        "| seed | random init | trained | chance | steps | final loss | CPU s | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['seed']} | {r['random_init']:.1%} | {r['trained']:.1%} | {r['chance']:.1%} | {r['steps']} | "
              f"{r['final_loss']:.3f} | {r['cpu_seconds']:.0f} | {r['peak_gib']:.2f} |" for r in rows]
    lines += [
        f"| **mean** | **{s['random_init']:.1%}** | **{s['trained']:.1%}** | {s['chance']:.1%} | | | | |",
        "",
        f"- random init {s['random_init']:.1%} vs twice chance {2 * s['chance']:.1%}: "
        f"{'within' if s['random_within_twice_chance'] else 'ABOVE'}",
        f"- trained - random init = {s['margin_points']:.1f} points (target >= {MARGIN_POINTS:g}): "
        f"{'met' if s['trained_25_points_above'] else 'NOT met'}",
        f"- CPU time per demo run (demo + DataLoader workers, user + system): at most {s['max_cpu_seconds']:.0f} s "
        f"(target <= {CPU_TARGET_S:.0f} s); peak memory of the process tree at most {s['max_peak_gib']:.2f} GiB "
        f"(target <= {TARGET_GIB:g} GiB)",
        "",
        f"Machine: {result['machine']}, shared with other jobs while measured; {result['jobs']} seed(s) side by "
        f"side, OMP_NUM_THREADS={result['threads']} per run. CPU s: from os.wait4 of each demo process (its "
        "DataLoader workers included).",
        "",
    ]
    return "\n".join(lines)


def learning_curve(run_dir: Path) -> list[dict]:
    """The measure of a demo run folder at its seeded initialisation and at each kept step checkpoint.

    Recomputed from the run's files (config.yaml, videos/, checkpoints/step_*.pt), so it also scores a run
    that is still going or was stopped: the measure against the number of training steps.
    """
    config = load_config(run_dir / "config.yaml")
    videos = [sorted((run_dir / "videos" / part).glob("*.mp4")) for part in ("train", "heldout")]
    frames = measure_frames(*videos, config.data.image_size)
    rows = [{"step": 0, "score": subject_retrieval(build_vito(config).online, frames)}]
    for file in sorted((run_dir / "checkpoints").glob("step_*.pt")):
        state = load_checkpoint(file)
        model = build_vito(config)
        model.load_state_dict(state["model"])
        rows.append({"step": state["step"], "score": subject_retrieval(model.online, frames)})
    return [{**row, "seed": config.train.seed, "max_steps": config.train.max_steps, "chance": frames.chance}
            for row in rows]


def curve_markdown(rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    steps = sorted({r["step"] for r in rows})
    score = {(r["seed"], r["step"]): r["score"] for r in rows}
    lines = ["# `vito demo`: held-out subject retrieval against training steps", "",
             f"Demo runs of {rows[0]['max_steps']} steps (cosine schedule over all of them), scored at their kept "
             f"checkpoints; step 0 = the seeded random initialisation. Chance {rows[0]['chance']:.1%}.", "",
             "| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for step in steps:
        values = [score.get((s, step)) for s in seeds]
        known = [v for v in values if v is not None]
        cells = [f"{v:.1%}" if v is not None else "-" for v in values]
        mean = f"{statistics.fmean(known):.1%}" + ("" if len(known) == len(seeds) else f" ({len(known)} seeds)")
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=None, help="shorter demo (default: the demo's own)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of each run (default: inherited); 1 on a crowded machine, where "
                             "contended threads spin and inflate the CPU time")
    parser.add_argument("--curve", type=Path, nargs="+", metavar="RUN_DIR",
                        help="instead: score the step checkpoints of existing demo run folders")
    args = parser.parse_args()
    if args.curve:
        rows = [row for run_dir in args.curve for row in learning_curve(run_dir)]
        write_json(RESULTS / "demo_measure_curve.json", {"rows": rows, "run_dirs": [str(p) for p in args.curve]})
        text = curve_markdown(rows)
        with atomic_write(RESULTS / "demo_measure_curve.md") as handle:
            handle.write(text)
        print(text)
        return
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda seed: run_seed(seed, args.max_steps, Path(tmp) / f"seed{seed}", args.threads),
                             args.seeds))
        metric = json.loads((Path(tmp) / f"seed{args.seeds[0]}" / "result.json").read_text())["metric"]
    extra = f" --max-steps {args.max_steps}" if args.max_steps is not None else ""
    result = {
        "benchmark": "vito demo: held-out measure, random init vs trained, over seeds",
        "command": f"vito demo{extra} train.seed=S",
        "threads": args.threads or os.environ.get("OMP_NUM_THREADS", "torch default"),
        "jobs": args.jobs,
        "metric": metric,
        "runs": rows,
        "summary": summary(rows),
        "machine": f"{platform.machine()} {platform.processor() or ''}, {platform.system()}".strip(),
        "python": platform.python_version(),
    }
    write_json(RESULTS / "demo_measure.json", result)
    text = markdown(result)
    with atomic_write(RESULTS / "demo_measure.md") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
