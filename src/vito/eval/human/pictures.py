"""The human benchmarks' pictures, of one run and, with ``--compare``, beside earlier runs.

* Paper Table 3 (model-vs-human): accuracy difference and consistency with people, one row per decision maker.
  ``draw_table`` lays out the rows of this run and of earlier ones, the humans' reference row included; the
  drawing itself takes formatted cells. Column titles are wrapped so that long ones never overlap their neighbours.
* Paper Fig. 3 (ClickMe): images, ClickMe human maps and several models' saliency maps side by side.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vito.eval.human.clickme_data import load_examples  # noqa: E402
from vito.eval.human.result_store import TABLE_COLUMNS, table_rows  # noqa: E402
from vito.viz.figures import save_figure  # noqa: E402

HEADER_WIDTH = 14  # characters per line of a column title


def consistency_table_figure(row_labels: Sequence[str], column_titles: Sequence[str],
                             cells: Sequence[Sequence[str]]) -> Figure:
    """The table of pre-formatted cells (one row per decision maker) as a matplotlib figure."""
    titles = [textwrap.fill(t, HEADER_WIDTH) for t in column_titles]
    labels = [textwrap.fill(label, 36) for label in row_labels]
    header_lines = max(t.count("\n") + 1 for t in titles)
    label_width = max(len(line) for label in labels for line in label.split("\n"))
    width = 1.25 * len(titles) + 0.085 * label_width + 0.5
    figure, axis = plt.subplots(figsize=(width, 0.42 * (len(cells) + header_lines + 1)))
    axis.axis("off")
    table = axis.table(cellText=[list(row) for row in cells], rowLabels=labels, colLabels=titles, loc="center",
                       cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.5)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_height(cell.get_height() * header_lines)
    return figure


def plot_consistency_table(row_labels: Sequence[str], column_titles: Sequence[str], cells: Sequence[Sequence[str]],
                           out: str | Path) -> Path:
    """Render the table as a PNG at ``out``."""
    return save_figure(consistency_table_figure(row_labels, column_titles, cells), out, dpi=150, tight=True)


def draw_table(results: Mapping[str, dict], out: Path) -> Path:
    """The table of earlier and current results (labelled as in ``result_store.load_results``) at ``out``."""
    rows = table_rows(results)
    cells = [[cell_text(values.get(key, math.nan)) for key, _ in TABLE_COLUMNS] for _, values in rows]
    return plot_consistency_table([label for label, _ in rows], [title for _, title in TABLE_COLUMNS], cells, out)


def cell_text(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _normalise(saliency: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per map so that maps of different scales share one colour range."""
    low, high = float(saliency.min()), float(saliency.max())
    return (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)


def plot_saliency_overlays(
    pixels: np.ndarray, human: np.ndarray, models: Mapping[str, np.ndarray], out: str | Path, alpha: float = 0.6
) -> Path:
    """Rows = images; columns = image, human map, then each model's map overlaid on the image.

    ``pixels`` is ``[N, H, W, 3]`` uint8, ``human`` and every model map ``[N, H, W]``.
    """
    columns = ["image", "human (ClickMe)", *models]
    rows = len(pixels)
    figure, axes = plt.subplots(rows, len(columns), figsize=(2.0 * len(columns), 2.0 * rows), squeeze=False)
    for row in range(rows):
        maps = [None, human[row], *(m[row] for m in models.values())]
        for column, (title, saliency) in enumerate(zip(columns, maps)):
            axis = axes[row, column]
            axis.imshow(pixels[row])
            if saliency is not None:
                axis.imshow(_normalise(saliency), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(textwrap.fill(title, 22), fontsize=8)
    return save_figure(figure, out, dpi=120)


def compare_clickme(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Fig. 3 from several ``vito eval clickme`` output folders (the same images, in the same order)."""
    first, models = load_examples(run_dirs)
    return plot_saliency_overlays(first["pixels"], first["human"], models, out)
