"""How a Result is written: ``result.json`` (every value unrounded), a short markdown page (``result.md``)
and one summary line for the terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vito.eval.core.result import RESULT_JSON, RESULT_MD, Metric, Result, plain, result_to_dict
from vito.io import atomic_write


def format_value(metric: Metric) -> str:
    """Four decimals for fractions and signed values (proportions also as a percent), integers for counts."""
    if metric.value is None:
        return "–"
    if metric.kind == "count":
        return f"{metric.value:.0f}"
    if metric.kind == "proportion":
        return f"{metric.value:.4f} ({100 * metric.value:.2f} %)"
    return f"{metric.value:.4f}"


MAX_MARKDOWN_ROWS = 50


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "–"
    return "–" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], limit: int = MAX_MARKDOWN_ROWS) -> list[str]:
    """A markdown table of dict rows (columns in first-seen order), at most ``limit`` rows shown."""
    if not rows:
        return ["(empty)"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in {RESULT_JSON})")
    return lines


def shown_metrics(result: Result) -> list[tuple[str, Metric]]:
    """The metrics a reader sees, each once: an alias (kNN's headline ``top1`` is ``top1_k20``: same label, same
    value) is shown where it first stands; ``result.json`` keeps every key."""
    seen, shown = set(), []
    for key, metric in result.metrics.items():
        if (metric.label or key, metric.value) not in seen:
            seen.add((metric.label or key, metric.value))
            shown.append((key, metric))
    return shown


def summary_line(result: Result, count: int = 3) -> str:
    """One terminal line: the first metrics, and the coverage when it is partial."""
    name = result.encoder.get("name") or "scoring only"
    values = ", ".join(f"{m.label or key} {format_value(m)}" for key, m in shown_metrics(result)[:count])
    cov = result.coverage
    partial = f" [PARTIAL: {cov.describe()}]" if cov.partial else ""
    return f"{result.evaluation} — {name}: {values or 'no metrics'}{partial}"


def result_markdown(result: Result) -> str:
    """The human-readable page of a Result: metrics, coverage, skipped inputs, pictures, tables, settings."""
    name = result.encoder.get("name") or result.encoder.get("spec") or "no encoder (scoring only)"
    cov = result.coverage
    lines = [f"# {result.evaluation} — {name}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {m.label or key} | {format_value(m)} |" for key, m in shown_metrics(result)]
    lines += ["", f"Coverage: {cov.describe()}"
              + (" — **PARTIAL: the numbers cover only part of the data**" if cov.partial else "")]
    if result.skipped:
        lines += ["", f"Skipped {len(result.skipped)} inputs:"]
        lines += [f"- {item}: {reason}" for item, reason in result.skipped[:MAX_MARKDOWN_ROWS]]
        if len(result.skipped) > MAX_MARKDOWN_ROWS:
            lines.append(f"- ... ({len(result.skipped) - MAX_MARKDOWN_ROWS} more in {RESULT_JSON})")
    for picture in result.pictures:
        lines += ["", f"![{Path(picture).stem}]({picture})"]
    for title, rows in result.tables.items():
        lines += ["", f"## {title}", "", *markdown_table(rows)]
    if result.artifacts:
        lines += ["", "Files: " + ", ".join(f"{k}: `{v}`" for k, v in result.artifacts.items())]
    lines += ["", "## Settings", "", *markdown_table([{"setting": k, "value": json.dumps(plain(v))}
                                                      for k, v in result.settings.items()])]
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
    lines += ["", f"{result.seconds:.1f} s" + (f"; {versions}" if versions else ""), ""]
    return "\n".join(lines)


def write_result(result: Result, out_dir: Path) -> None:
    """``out_dir/result.json`` (every value unrounded, undefined ones as null) and ``out_dir/result.md``."""
    out_dir = Path(out_dir)
    data = result_to_dict(result)
    with atomic_write(out_dir / RESULT_JSON) as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
    with atomic_write(out_dir / RESULT_MD) as handle:
        handle.write(result_markdown(result))
