"""Paper Table 3 as a picture: accuracy difference and consistency with people, one row per model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vito.eval.human import TABLE_COLUMNS  # noqa: E402
from vito.io import atomic_write  # noqa: E402


def plot_consistency_table(results: Mapping[str, dict], out: str | Path) -> Path:
    """Render the overall (dataset-averaged) model-vs-human metrics of each result JSON as a PNG table."""
    cells = [
        ["–" if math.isnan(v := result["overall"].get(key, math.nan)) else f"{v:.3f}" for key, _ in TABLE_COLUMNS]
        for result in results.values()
    ]
    figure, axis = plt.subplots(figsize=(1.6 * (len(TABLE_COLUMNS) + 1), 0.45 * (len(cells) + 2)))
    axis.axis("off")
    table = axis.table(cellText=cells, rowLabels=list(results), colLabels=[t for _, t in TABLE_COLUMNS], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.4)
    figure.tight_layout()
    out = Path(out)
    with atomic_write(out, "wb") as handle:
        figure.savefig(handle, format="png", dpi=150, bbox_inches="tight")
    plt.close(figure)
    return out
