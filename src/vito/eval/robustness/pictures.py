"""Paper Fig. 2: Δ-accuracy (clean − corrupted) on ImageNet-3DCC against corruption severity, several models.

The curves of earlier runs (``vito eval imagenet-3dcc --compare``) are read back from their ``result.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vito.errors import DataError  # noqa: E402
from vito.eval.core.result import read_result  # noqa: E402
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


def result_path(item: str | Path) -> Path:
    """A 3DCC output folder's ``result.json`` named directly or through the folder that holds it."""
    return Path(item) if Path(item).is_file() else Path(item) / "result.json"


def per_severity_of(item: str | Path) -> tuple[str, dict[str, float]]:
    """(label, Δ-accuracy per severity) of an earlier ``vito eval imagenet-3dcc`` output."""
    path = result_path(item)
    if not path.is_file():
        raise DataError(f"no ImageNet-3DCC result at {path}")
    result = read_result(path.parent)
    if result.evaluation != "imagenet-3dcc":
        raise DataError(f"{path} is a {result.evaluation} result, not imagenet-3dcc")
    severities = {key.rsplit("_", 1)[1]: m.value for key, m in result.metrics.items()
                  if key.startswith("delta_severity_")}
    return result.encoder.get("name") or path.parent.name, severities


def plot_3dcc(items: Sequence[str | Path], out: Path, current: tuple[str, dict] | None = None) -> Path:
    """Fig. 2 from several 3DCC output folders (and this run), one line per model."""
    curves = dict([current] if current else [])
    for item in items:
        name, severities = per_severity_of(item)
        curves[name if name not in curves else f"{name} ({Path(item).name})"] = severities
    return plot_delta_accuracy(curves, out)
