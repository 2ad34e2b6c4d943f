"""How far a curated class distribution is from ImageNet's (near-)uniform classes, as a number and a picture.

VideoNet's point (paper §3.2, §4.3) is to align the class distribution of video data with ImageNet's: the number
is the KL divergence to uniform, the picture the share of each class, sorted from most to least frequent,
against the uniform share.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vito.viz.figures import save_figure  # noqa: E402


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform) in nats of the class shares ``p``; 0 for a perfectly balanced dataset."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(np.sum(p * np.log(p * len(counts))))


def plot_class_distribution(counts: np.ndarray, path: str | Path, title: str = "Class distribution",
                            kl: float | None = None) -> None:
    """Write a PNG of the sorted class shares of ``counts`` against the uniform distribution.

    ``kl``: the KL divergence to uniform in nats (:func:`kl_to_uniform`), shown in the title.
    """
    counts = np.asarray(counts, dtype=np.float64)
    shares = np.sort(counts)[::-1] / max(counts.sum(), 1.0)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    # Rank k spans [k, k + 1) on a log axis: the head of a skewed set stays wide enough to see even when a
    # handful of classes hold everything (one bar of 1/1000 of a linear axis is under one pixel).
    ax.stairs(shares, np.arange(1, len(counts) + 2), fill=True, color="tab:blue",
              label=f"curated ({int(counts.sum())} videos)")
    ax.axhline(1.0 / len(counts), color="tab:red", linestyle="--", label=f"uniform ImageNet (1/{len(counts)})")
    ax.set_xscale("log")
    ax.set_xlim(1, len(counts) + 1)
    ax.set_xlabel("class rank, most to least frequent (log scale)")
    ax.set_ylabel("share of videos")
    covered = int((counts > 0).sum())
    kl_text = f", KL to uniform {kl:.2f} nats" if kl is not None else ""
    ax.set_title(f"{title}: {covered}/{len(counts)} classes{kl_text}")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path, dpi=120)
