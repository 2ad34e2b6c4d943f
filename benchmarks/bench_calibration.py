"""Calibration: do the paper's ablations point the same way in vito's own training, at CPU scale?

    nohup nice -n 19 python -m benchmarks.bench_calibration --threads 1 > calibration.log 2>&1 &
    python -m benchmarks.bench_calibration --only baseline pooling=average --seeds 0   # a subset
    python -m benchmarks.bench_calibration --report                                    # tables only

Every setting is the full `vito demo` (its world, its 200 steps, its measures) with config overrides, one
subprocess per (setting, seed); the baseline is the demo itself, shared by every ablation. Each run is
measured by the demo's two numbers: subject retrieval (held-out frame -> nearest training frame of the same
video) and attention on subject (share of each pooled stage's attention mass on the subject, against the
subject's share of the frame), for the trained encoder and its random init.

Resumable: each (setting, seed) result is written into benchmarks/results/calibration.json (atomically) as
soon as it finishes, and a rerun skips the pairs already there with the same overrides. Runs go seed by seed
(seed 0 of every setting, then seed 1, ...), so a partial run covers every ablation. The tables
(benchmarks/results/calibration.md: mean ± sd over the seeds done, with their count) are rewritten after
each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_demo_measure import run_and_watch
from benchmarks.report_files import RESULTS, save_report

NAME = "calibration"

# setting -> the config overrides that make it from the demo (configs/demo.yaml: 2-scale attention pooling,
# T = 2.56 s, crop minimum 0.4, marginal sampling, 3 views)
SETTINGS: dict[str, list[str]] = {
    "baseline (demo)": [],
    "average pooling": ["model.attention=false"],
    "one scale (res5)": ["model.stages=[-1]"],
    "T = 1.28 s": ["data.window_seconds=1.28"],
    "T = 3.2 s": ["data.window_seconds=3.2"],
    "crop minimum 0.08": ["data.crop_min_scale=0.08"],
    "uniform sampling": ["data.sampling=uniform"],
    "delta sampling": ["data.sampling=delta"],
    "2 views": ["data.num_views=2"],
    # the paper's MoCLR baseline on the same training frames: 2 views of one frame, average pooling of the last
    # stage, BYOL's crop (configs/moclr_r50.yaml), everything else the demo's
    "MoCLR, same frames": ["data.num_views=2", "data.sampling=same", "data.crop_min_scale=0.08",
                           "model.stages=[-1]", "model.attention=false"],
}
BASELINE = "baseline (demo)"

# ablation -> (its settings besides the baseline, where the baseline sits in it, what the paper reports)
ABLATIONS: dict[str, tuple[list[str], str]] = {
    "Attention vs average pooling (Fig. B.2 right)": (
        ["average pooling"], "2-scale attention beats 2-scale average pooling by 0.6 mIoU on PASCAL (one scale: "
        "attention +0.2 over average; two scales: +0.6 without attention, +1.0 with)"),
    "One vs two scales (Fig. B.2 right)": (
        ["one scale (res5)"], "2 scales beat 1 scale: +1.0 mIoU PASCAL with attention pooling (+0.6 without)"),
    "Clip length T (Fig. B.2 centre)": (
        ["T = 1.28 s", "T = 3.2 s"], "2.56 s best; 1.28 s -1.0 mIoU; 3.2 s about the same"),
    "Crop minimum (Fig. B.2 left)": (
        ["crop minimum 0.08"], "0.4 beats 0.08 (+1.7 mIoU PASCAL)"),
    "Temporal sampling (Fig. B.3)": (
        ["uniform sampling", "delta sampling"], "marginal best on PASCAL and ADE20K"),
    "VITO vs MoCLR on the same frames (Table B.1)": (
        ["MoCLR, same frames"], "VITO 75.5 vs MoCLR 72.8 mIoU PASCAL, both on VideoNet"),
    "2 vs 3 views (§4.3: VITO uses 3)": (
        ["2 views"], "3 views is the paper's choice; no separate ablation number"),
}
METRICS = ("trained", "random_init", "attention_stage1", "attention_stage2", "subject_area", "cpu_seconds")


def run_one(setting: str, seed: int, work: Path, threads: int | None) -> dict:
    """One `vito demo` with the setting's overrides; the numbers of its result.json, CPU s and peak memory."""
    out = work / f"setting{list(SETTINGS).index(setting)}_seed{seed}"
    command = [sys.executable, "-m", "vito", "demo", "--out", str(out), f"train.seed={seed}", *SETTINGS[setting]]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    started = time.perf_counter()
    cpu, peak = run_and_watch(command, env)
    result = json.loads((out / "result.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    looks = result["attention_on_subject"]
    return {"setting": setting, "seed": seed, "overrides": SETTINGS[setting], "stages": result["stages"],
            "trained": result["trained"], "random_init": result["random_init"], "chance": result["chance"],
            "attention_trained": looks["trained"], "attention_random_init": looks["random_init"],
            "subject_area": looks["subject_area"], "final_loss": result["final_loss"], "steps": result["steps"],
            "cpu_seconds": round(cpu, 1), "peak_gib": round(peak, 3),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def load_done(path: Path) -> list[dict]:
    """The runs already in the results file whose overrides are still the setting's (others are redone)."""
    if not path.is_file():
        return []
    runs = json.loads(path.read_text()).get("runs", [])
    return [r for r in runs if SETTINGS.get(r["setting"]) == r["overrides"]]


def merged(on_disk: list[dict], ours: list[dict]) -> list[dict]:
    """Runs of the results file and of this process, one per (setting, seed), ours first: another instance
    writing the same file (say, one started for a few settings) loses none of its runs to this one."""
    seen, out = set(), []
    for run in [*ours, *on_disk]:
        if (run["setting"], run["seed"]) not in seen:
            seen.add((run["setting"], run["seed"]))
            out.append(run)
    return out


def flat(run: dict) -> dict[str, float]:
    """A run's numbers as the tables show them (attention: the trained encoder's, per pooled stage)."""
    attention = run["attention_trained"] + [float("nan")] * (2 - len(run["attention_trained"]))
    return {"trained": run["trained"], "random_init": run["random_init"], "attention_stage1": attention[0],
            "attention_stage2": attention[1], "subject_area": run["subject_area"], "cpu_seconds": run["cpu_seconds"]}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per setting: mean and sd (over seeds) of each number, and the seeds they come from."""
    out = {}
    for setting in SETTINGS:
        rows = sorted((r for r in runs if r["setting"] == setting), key=lambda r: r["seed"])
        if not rows:
            continue
        values = [flat(r) for r in rows]
        stats = {}
        for key in METRICS:
            column = [v[key] for v in values if v[key] == v[key]]  # NaN: the stage does not exist
            stats[key] = ({"mean": statistics.fmean(column), "sd": statistics.stdev(column) if len(column) > 1 else None}
                          if column else None)
        out[setting] = {"seeds": [r["seed"] for r in rows], "stages": rows[0]["stages"], **stats}
    return out


def _cell(stat: dict | None, percent: bool = True) -> str:
    if stat is None:
        return "-"
    scale, digits = (100, 1) if percent else (1, 0)
    mean = f"{scale * stat['mean']:.{digits}f}"
    if stat["sd"] is None:  # one seed: no sd, never a made-up "± 0.0"
        return mean
    return f"{mean} ± {scale * stat['sd']:.{digits}f}"


def table_rows(summary: dict[str, dict], settings: list[str]) -> list[str]:
    lines = ["| setting | seeds | subject retrieval, trained % | random init % | attention on subject, stage 1 % | "
             "stage 2 % | subject area % | CPU s |", "|---|---|---|---|---|---|---|---|"]
    for setting in settings:
        s = summary.get(setting)
        if s is None:
            lines.append(f"| {setting} | 0 | not run yet | | | | | |")
            continue
        lines.append(f"| {setting} | {len(s['seeds'])} ({', '.join(map(str, s['seeds']))}) | {_cell(s['trained'])} | "
                     f"{_cell(s['random_init'])} | {_cell(s['attention_stage1'])} | {_cell(s['attention_stage2'])} | "
                     f"{_cell(s['subject_area'])} | {_cell(s['cpu_seconds'], percent=False)} |")
    return lines


def markdown(summary: dict[str, dict], meta: dict) -> str:
    lines = ["# Calibration: the paper's ablations in the demo world", "",
             f"Each row: `vito demo train.seed=S <overrides>` (200 steps, ResNet-18 at 64 px, {meta['threads']} "
             "torch thread(s)); mean ± sd over the seeds listed (one seed: its value, no sd). Subject retrieval: held-out frame -> nearest "
             "training frame from the same video (chance 12.5 %). Attention on subject: share of the trained "
             "encoder's attention mass on the subject per pooled stage, in `model.stages` order (stage 1 of a "
             "one-stage model is res5; average pooling gives about the subject's area by construction); compare "
             "with the subject's share of the frame.", ""]
    for title, (settings, paper) in ABLATIONS.items():
        lines += [f"## {title}", "", f"Paper: {paper}.", "", *table_rows(summary, [BASELINE, *settings]), ""]
    lines += ["## Overrides", "", "| setting | overrides |", "|---|---|"]
    lines += [f"| {s} | `{' '.join(o) or '(none: the demo)'}` |" for s, o in SETTINGS.items()]
    lines += ["", f"Machine: {meta['machine']}, shared with other jobs; run with `nice -n 19`. CPU s: the demo process "
              "and its data-loader workers (os.wait4).", ""]
    return "\n".join(lines)


def write(runs: list[dict], meta: dict, folder: Path, echo: bool = True) -> None:
    summary = summarise(runs)
    save_report(NAME, {**meta, "settings": SETTINGS, "runs": runs, "summary": summary}, markdown(summary, meta),
                folder, echo)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), metavar="SETTING", help="these settings only")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from the results file")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of calibration.json/.md")
    args = parser.parse_args(argv)
    meta = {"benchmark": "calibration: the paper's ablations in the demo world", "threads": args.threads,
            "machine": f"{platform.machine()} {platform.processor() or ''}, {platform.system()}".strip(),
            "python": platform.python_version()}
    runs = load_done(args.results / f"{NAME}.json")
    if args.report:
        write(runs, meta, args.results)
        return runs
    done = {(r["setting"], r["seed"]) for r in runs}
    todo = [(setting, seed) for seed in args.seeds for setting in (args.only or SETTINGS)
            if (setting, seed) not in done]
    print(f"{len(done)} run(s) done, {len(todo)} to go", flush=True)
    lock = threading.Lock()

    def one(item: tuple[str, int], work: Path) -> None:
        setting, seed = item
        print(f"start {setting} seed {seed}", flush=True)
        try:
            row = run_one(setting, seed, work, args.threads)
        except SystemExit as failure:  # one failed run: say so, keep going (a rerun retries it)
            print(f"FAILED {setting} seed {seed}: {failure}", flush=True)
            return
        with lock:  # record it at once: an interrupted benchmark keeps every finished run
            runs[:] = merged(load_done(args.results / f"{NAME}.json"), [*runs, row])
            write(runs, meta, args.results, echo=False)
        print(f"done {setting} seed {seed}: retrieval {row['trained']:.1%} (random init {row['random_init']:.1%}), "
              f"attention on subject {[round(v, 3) for v in row['attention_trained']]} vs area "
              f"{row['subject_area']:.3f}, {row['cpu_seconds']:.0f} CPU s", flush=True)

    with tempfile.TemporaryDirectory(prefix="vito_calibration_") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda item: one(item, Path(tmp)), todo))
    runs = merged(load_done(args.results / f"{NAME}.json"), runs)
    write(runs, meta, args.results)
    return runs


if __name__ == "__main__":
    main()
