"""The training loss curve, read from a run's ``metrics.jsonl`` (one JSON object per logged step)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from vito.errors import VitoError  # noqa: E402
from vito.viz.figures import save_figure  # noqa: E402


def read_metrics(metrics_jsonl: str | Path) -> list[dict]:
    lines = Path(metrics_jsonl).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_loss_curve(metrics_jsonl: str | Path, png: str | Path) -> Path:
    """Loss (left axis) and learning rate (right axis) against the step, written as a PNG."""
    records = [r for r in read_metrics(metrics_jsonl) if "loss" in r]
    if not records:
        raise VitoError(f"{metrics_jsonl} holds no logged steps to plot")
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in records], color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if all("lr" in r for r in records):
        lr_axis = ax.twinx()
        lr_axis.plot(steps, [r["lr"] for r in records], color="tab:gray", linestyle="--", label="learning rate")
        lr_axis.set_ylabel("learning rate", color="tab:gray")
    ax.set_title("VITO pretraining")
    return save_figure(fig, png, dpi=100)
