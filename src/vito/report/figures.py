"""The study's plots: per ``plots:`` entry, one metric of its rows against a config value, with error bars.

Why from the document: a plot shows exactly the numbers of the tables (each row's mean ± sd over its seeds, or
the value of a row without seeds), so it is built from the same records, after them. x is read from each row's
resolved config (``PretrainRow.value``), so a row that kept the preset's value still has its point; ``x: row``
puts the rows' names on a categorical axis. Reference rows are horizontal lines. An undefined point (a seed's
cell failed, partial or missing) is not drawn and the caption says so. Each plot is written as
``OUT/plots/<title>.png`` and ``.svg`` and embedded in ``index.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vito.errors import VitoError
from vito.io import atomic_write
from vito.report.aggregate import SOUND, UNDEFINED, seeds_label
from vito.report.document import cell_index
from vito.report.study import ROW_X, PlotEntry, folder_name
from vito.report.suite import Suite

PLOTS_DIR = "plots"


def draw(title: str, x_label: str, y_label: str, points: list[dict[str, Any]],
         references: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The one call into the plotting module: (PNG bytes, SVG text) of one study plot."""
    from vito.report.plots import PlotPoint, PlotReference, study_plot

    return study_plot(title, x_label, y_label, [PlotPoint(**point) for point in points],
                      [PlotReference(**reference) for reference in references])


def _value(record: dict[str, Any] | None, metric: str, scale: float) -> tuple[float | None, float | None, int]:
    """(mean, sd, seeds) of a row's record for ``metric``, scaled (proportions to percent)."""
    if record is None or record["status"] not in SOUND or metric not in record["metrics"]:
        return None, None, len(record.get("seeds") or [1]) if record else 0
    mean = record["metrics"][metric]
    sd = record.get("sd", {}).get(metric) if record.get("aggregate") else None
    seeds = len(record["seeds"]) if record.get("aggregate") else 1
    return (None if mean is None else mean * scale), (None if sd is None else sd * scale), seeds


def _check_metric(plot: PlotEntry, document: dict[str, Any], where: str) -> str:
    """The metric's kind; a metric that none of the entry's results has is a one-line error naming the ones
    it has (checked once results exist: what an evaluation reports is known from its results)."""
    cells = [cell for cell in document["cells"] if cell["entry"] == plot.entry and cell["status"] in SOUND]
    kinds = {name: kind for cell in cells for name, kind in cell["kinds"].items()}
    if cells and plot.metric not in kinds:
        raise VitoError(f"{where}.metric: {plot.entry} has no metric {plot.metric!r} (it has: "
                        f"{', '.join(sorted(kinds))})")
    return kinds.get(plot.metric, "value")


def plot_record(suite: Suite, plot: PlotEntry, document: dict[str, Any], out: Path) -> dict[str, Any]:
    """Draw one plot into ``out/plots/`` and describe it for the outputs (or say why it is not drawn)."""
    where = f"{suite.path}: plots.{plot.title}"
    record: dict[str, Any] = {"title": plot.title, "entry": plot.entry, "metric": plot.metric, "x": plot.x,
                              "rows": list(plot.rows), "references": list(plot.references), "png": None,
                              "svg": None, "error": None, "points": [], "lines": []}
    try:
        kind = _check_metric(plot, document, where)
    except VitoError as error:
        record.update(error=str(error), caption=str(error))
        return record
    scale = 100.0 if kind == "proportion" else 1.0
    index = cell_index(document)
    for row in plot.rows:
        x = row if plot.x == ROW_X else suite.encoders[row].pretrain.value(plot.x)
        mean, sd, n = _value(index.get((row, plot.entry)), plot.metric, scale)
        record["points"].append({"label": row, "x": x if isinstance(x, (int, float)) and not isinstance(x, bool)
                                 else str(x), "mean": mean, "sd": sd, "n": n})
    if any(isinstance(point["x"], str) for point in record["points"]):
        for point in record["points"]:
            point["x"] = str(point["x"])
    for row in plot.references:
        mean, sd, _ = _value(index.get((row, plot.entry)), plot.metric, scale)
        record["lines"].append({"label": row, "mean": mean, "sd": sd})
    record["caption"] = _caption(plot, record, kind)
    unit = " (%)" if kind == "proportion" else ""
    try:
        png, svg = draw(plot.title, "row" if plot.x == ROW_X else plot.x, f"{plot.entry} {plot.metric}{unit}",
                        record["points"], record["lines"])
        name = folder_name(plot.title)
        (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
        with atomic_write(out / PLOTS_DIR / f"{name}.png", "wb") as handle:
            handle.write(png)
        with atomic_write(out / PLOTS_DIR / f"{name}.svg") as handle:
            handle.write(svg)
    except (ImportError, OSError, VitoError) as error:
        record["error"] = f"cannot draw {plot.title!r}: {error}"
        return record
    record.update(png=f"{PLOTS_DIR}/{name}.png", svg=f"{PLOTS_DIR}/{name}.svg")
    return record


def _caption(plot: PlotEntry, record: dict[str, Any], kind: str) -> str:
    counts = sorted({point["n"] for point in record["points"]})
    spread = seeds_label(counts[0]) if len(counts) == 1 else f"mean ± sd over {'/'.join(map(str, counts))} seeds"
    text = (f"{plot.metric} of {plot.entry}{' in percent' if kind == 'proportion' else ''} against "
            f"{'the row' if plot.x == ROW_X else plot.x}; each point the {spread} (error bars: sd)")
    if record["lines"]:
        text += "; horizontal lines: " + ", ".join(line["label"] for line in record["lines"])
    undefined = [point["label"] for point in [*record["points"], *record["lines"]] if point["mean"] is None]
    if undefined:
        text += f"; not drawn ({UNDEFINED}: a seed failed, is partial or not computed): {', '.join(undefined)}"
    return text + "."


def plot_records(suite: Suite, document: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    return [plot_record(suite, plot, document, out) for plot in suite.plots.values()]
