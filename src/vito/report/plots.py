"""A study's line plot: one metric against one setting, each point a mean ± sd over seeds (`vito report`'s plots).

Why one function returning bytes and text (not files): the report embeds the SVG in ``index.html`` and writes
both pictures atomically itself, so a plot is a pure function of its points. The same points give the same SVG
byte for byte (no date, fixed element ids), so a rerun of a report that computed nothing rewrites nothing new.

matplotlib is imported inside :func:`study_plot`: ``vito --help`` and ``vito report --help`` do not load it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

SVG_SALT = "vito-study-plot"  # matplotlib derives the SVG's element ids from this instead of a random salt


@dataclass(frozen=True)
class PlotPoint:
    """One row of the study at one x: ``mean`` / ``sd`` over its ``n`` seeds (``mean=None``: undefined)."""

    label: str
    x: float | str
    mean: float | None
    sd: float | None
    n: int


@dataclass(frozen=True)
class PlotReference:
    """A row drawn as a horizontal line (e.g. MoCLR on ImageNet, a supervised encoder); ``sd`` shades a band."""

    label: str
    mean: float | None
    sd: float | None


def study_plot(title: str, x_label: str, y_label: str, points: list[PlotPoint],
               references: list[PlotReference]) -> tuple[bytes, str]:
    """The plot as (PNG bytes, SVG text).

    Numeric x values are drawn on a numeric axis, sorted; string x values on a categorical axis in the given
    order (mixed x values are drawn categorically, as given). Error bars are the sd over seeds; the legend says
    over how many. Points and references whose mean is undefined are not drawn, and a note under the plot names
    them, so a missing point is never mistaken for a point left out of the study.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    numeric = bool(points) and all(_is_number(p.x) for p in points)
    drawn = [p for p in points if _defined(p.mean)]
    if numeric:
        drawn.sort(key=lambda p: float(p.x))
    positions = _positions(points, numeric)
    undefined = [f"{p.label} ({p.x})" for p in points if not _defined(p.mean)]
    undefined += [r.label for r in references if not _defined(r.mean)]

    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
        figure = Figure(figsize=(6.4, 4.2))
        axes = figure.add_subplot()
        _draw_points(axes, drawn, positions)
        _draw_references(axes, references)
        if not numeric:
            axes.set_xticks(range(len(positions)), list(positions), rotation=20 if len(positions) > 4 else 0)
        axes.set_title(title)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small", loc="best")
        if undefined:
            figure.text(0.01, 0.01, f"not drawn (undefined: a seed failed or is partial): {', '.join(undefined)}",
                        fontsize="small", wrap=True)
        figure.tight_layout(rect=(0, 0.06 if undefined else 0, 1, 1))
        png, svg = io.BytesIO(), io.StringIO()
        figure.savefig(png, format="png", dpi=100, metadata={"Software": None})
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), svg.getvalue()


def _draw_points(axes, drawn: list[PlotPoint], positions: dict) -> None:
    """The line with sd error bars; the legend entry says how many seeds each point averages."""
    if not drawn:
        return
    counts = sorted({p.n for p in drawn})
    over = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    xs = [positions[_key(p.x)] for p in drawn]
    ys = [p.mean for p in drawn]
    errors = [p.sd if _defined(p.sd) else 0.0 for p in drawn]
    bars = axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, color="tab:green",
                         label=f"mean ± sd over {over} seed{'s' if counts[-1] != 1 else ''}")
    bars.lines[0].set_gid("study-points")  # the SVG element's id: fixed, and findable by a reader of the file
    for x, y, point in zip(xs, ys, drawn):
        axes.annotate(point.label, (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize="x-small")


def _draw_references(axes, references: list[PlotReference]) -> None:
    """Each defined reference as a labelled horizontal line, with its ±sd band shaded when it has one."""
    styles = ("--", ":", "-.", (0, (5, 1, 1, 1)))
    colors = ("tab:blue", "tab:gray", "tab:purple", "tab:orange", "tab:brown")
    for index, reference in enumerate(r for r in references if _defined(r.mean)):
        color = colors[index % len(colors)]
        line = axes.axhline(reference.mean, linestyle=styles[index % len(styles)], color=color, label=reference.label)
        line.set_gid(f"reference-{index}")
        if _defined(reference.sd) and reference.sd > 0:
            band = axes.axhspan(reference.mean - reference.sd, reference.mean + reference.sd, color=color, alpha=0.12)
            band.set_gid(f"reference-{index}-band")


def _positions(points: list[PlotPoint], numeric: bool) -> dict:
    """x value -> axis position: the number itself, or the category's index in the order first given."""
    if numeric:
        return {_key(p.x): float(p.x) for p in points}
    order: dict = {}
    for point in points:
        order.setdefault(_key(point.x), len(order))
    return order


def _key(x: float | str) -> float | str:
    return float(x) if _is_number(x) else str(x)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _defined(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
