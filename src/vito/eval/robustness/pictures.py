"""Paper Fig. 2: Δ-accuracy (clean − corrupted) on ImageNet-3DCC against corruption severity, several models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vito.viz.figures import save_figure  # noqa: E402


def plot_delta_accuracy(curves: Mapping[str, Mapping[str, float]], out: str | Path) -> Path:
    """One line per model: mean over the evaluated corruptions of (clean − corrupted) top-1, in points.

    ``curves`` maps a model name to its Δ-accuracy (a fraction) per severity ("1".."5"). Lower is more robust.
    """
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    for name, per_severity in curves.items():
        severities = sorted(per_severity, key=int)
        axis.plot([int(s) for s in severities], [100 * per_severity[s] for s in severities], marker="o", label=name)
    axis.set_xlabel("corruption severity")
    axis.set_ylabel("Δ-accuracy (clean − corrupted, %)")
    axis.set_title("ImageNet-3DCC")
    axis.set_xticks(range(1, 6))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, out, dpi=150)
