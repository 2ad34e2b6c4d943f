"""Paper Fig. 2: Δ-accuracy (clean − corrupted) on ImageNet-3DCC against corruption severity, several models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vito.io import atomic_write  # noqa: E402


def plot_delta_accuracy(results: Mapping[str, dict], out: str | Path) -> Path:
    """One line per model: mean over the evaluated corruptions of (clean − corrupted) top-1, in points.

    ``results`` maps a model name to the JSON written by ``vito eval imagenet-3dcc``. Lower is more robust.
    """
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    for name, result in results.items():
        per_severity = result["delta_accuracy"]["per_severity"]
        severities = sorted(per_severity, key=int)
        axis.plot([int(s) for s in severities], [100 * per_severity[s] for s in severities], marker="o", label=name)
    axis.set_xlabel("corruption severity")
    axis.set_ylabel("Δ-accuracy (clean − corrupted, %)")
    axis.set_title("ImageNet-3DCC")
    axis.set_xticks(range(1, 6))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    out = Path(out)
    with atomic_write(out, "wb") as handle:
        figure.savefig(handle, format="png", dpi=150)
    plt.close(figure)
    return out
