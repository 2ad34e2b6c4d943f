"""The fine-tune benchmarks' shared comparison: vito's loop against a plain loop, interleaved rounds.

Both loops run the same model, data and settings; each round runs them in alternating order and counts
images/s as batch / median step time. The ratio is the median over rounds of each round's vito / plain: the
machines are noisy at the scale of rounds (a shared 2-core machine was seen running both loops 3x slower for
a round or two), so only loops compared within one round are compared at equal conditions; the medians of
each loop's images/s over all rounds are reported beside it.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable

import torch

TARGET_RATIO = 0.95  # vito's loop at least this fraction of the plain loop's images/s
LOOPS = ("vito", "plain")


def interleaved_rounds(rounds: int, batch: int, step_times: dict[str, Callable[[], list[float]]]) -> list[dict]:
    """``step_times[name]()`` runs one round of loop ``name`` and returns its step times in seconds."""
    per_round = []
    for index in range(rounds):
        order = list(LOOPS) if index % 2 == 0 else list(reversed(LOOPS))
        times = {name: step_times[name]() for name in order}
        ips = {name: batch / statistics.median(t) for name, t in times.items()}
        per_round.append({"order": order, "images_per_s": ips, "step_s": times})
        print(f"round {index}: " + ", ".join(f"{n} {v:.2f} img/s" for n, v in ips.items()), flush=True)
    return per_round


def machine(load_before: float) -> dict:
    """Threads, CPUs, versions and the load average before and after: what the absolute numbers depend on."""
    return {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_1min": [load_before, os.getloadavg()[0]]}


def summary(per_round: list[dict]) -> dict:
    """Median images/s per loop over the rounds, and the median of the per-round ratios against the target."""
    medians = {name: statistics.median(r["images_per_s"][name] for r in per_round) for name in LOOPS}
    ratio = statistics.median(r["images_per_s"]["vito"] / r["images_per_s"]["plain"] for r in per_round)
    return {"train_images_per_s": medians, "ratio_vito_over_plain": ratio, "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO, "rounds": per_round}


def method_sentence(setup: dict) -> str:
    """Precision, threads, load and the round structure: the part of each report's set-up line they share."""
    before, after = setup["load_average_1min"]
    return (f"{setup['precision']}, {setup['threads']} threads on {setup['cpus']} CPUs (shared machine, load average "
            f"{before:.1f} before and {after:.1f} after: read the ratio, not the absolute numbers). "
            f"{setup['rounds']} rounds of {setup['steps_per_round']} timed steps per loop, the loops' order "
            "alternating; per round images/s = batch / median step time; below: median over rounds.")


def comparison_lines(report: dict) -> list[str]:
    """The markdown table of the two loops and the ratio paragraph."""
    t = report["train_images_per_s"]
    return [
        "| loop | train images/s |",
        "|---|---|",
        f"| vito `finetune` | {t['vito']:.3f} |",
        f"| plain loop | {t['plain']:.3f} |",
        "",
        f"Ratio vito / plain, median of the rounds' ratios: **{report['ratio_vito_over_plain']:.3f}** (target >= "
        f"{report['target_ratio']}: {'met' if report['meets_target'] else 'not met'}). Per round (vito / plain): "
        + ", ".join(f"{r['images_per_s']['vito'] / r['images_per_s']['plain']:.2f}" for r in report["rounds"])
        + ". The images/s above are each loop's median over all rounds; on a shared machine the speed changes "
        "between rounds more than between the loops.",
    ]
