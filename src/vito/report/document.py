"""The content of a report, written once as ``results.json`` and read by the HTML and markdown writers.

Why one document: the three outputs must show the same numbers; building the rows, the grouped metric columns
and the cells once (values unrounded, as the cells' own ``result.json`` hold them) and formatting them in one
function keeps ``index.html``, ``report.md`` and ``results.json`` from drifting apart.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vito.eval.core.registry import get
from vito.eval.core.result import Result
from vito.io import write_json
from vito.report.grid import CACHED, COMPUTED, FAILED, Cell, GridRun, cell_settings
from vito.report.suite import Suite

FORMAT = "vito-report/1"
# The paper's grouping (Table 1: scene / video / OOD; Tables 2-3: human alignment), in its order.
GROUPS: dict[str, tuple[str, str]] = {
    "scene": ("Table 1", "Scene understanding"),
    "dense": ("Table 1", "Scene understanding: dense transfer"),
    "video": ("Table 1", "Video understanding"),
    "ood": ("Table 1", "OOD recognition"),
    "human": ("Tables 2–3", "Human alignment"),
}


@dataclass(frozen=True)
class Column:
    evaluation: str
    metric: str
    label: str
    kind: str


def table_value(value: float | None, kind: str) -> str:
    """A metric as the report's tables show it, compactly: proportions in percent with one decimal, signed
    values with their sign, counts whole (``format_value`` is the longer form of each cell's result.md)."""
    if value is None:
        return "n/a"
    if kind == "proportion":
        return f"{100 * value:.1f}"
    if kind == "signed":
        return f"{value:+.3f}"
    if kind == "count":
        return f"{value:.0f}"
    return f"{value:.4g}"


def column_label(column: dict[str, Any]) -> str:
    """A column's header: the metric's label (else its name), with the unit the tables use."""
    label = column["label"] or column["metric"]
    return f"{label} (%)" if column["kind"] == "proportion" else label


def _columns(cells: list[Cell], evaluation: str, chosen: list[str] | None) -> list[Column]:
    """The metrics of ``evaluation``'s cells, in the order the first cell that has each lists them, or the
    ``chosen`` ones in their order. An evaluation without any result yet gets one placeholder column, so that
    its failed cells still show."""
    results = [cell.result for cell in cells if cell.evaluation == evaluation and cell.result is not None]
    columns: dict[str, Column] = {}
    for result in results:
        for name, metric in result.metrics.items():
            columns.setdefault(name, Column(evaluation, name, metric.label, metric.kind))
    if chosen is not None and columns:
        return [columns.get(name, Column(evaluation, name, f"{name} (no such metric)", "value")) for name in chosen]
    shown: list[Column] = []
    for column in columns.values():  # an alias (kNN's headline top1 = top1_k20) is shown once
        if not any(_same_numbers(results, column, other) for other in shown):
            shown.append(column)
    return shown or [Column(evaluation, "", "no result yet", "value")]


def _same_numbers(results: list[Result], a: Column, b: Column) -> bool:
    """Whether two columns are one metric under two names: same label and the same value in every cell."""
    if (a.label or a.metric) != (b.label or b.metric):
        return False
    values = [(r.metrics.get(a.metric), r.metrics.get(b.metric)) for r in results]
    return all(x is not None and y is not None and x.value == y.value for x, y in values)


def groups(suite: Suite, cells: list[Cell]) -> list[dict[str, Any]]:
    """The tables: the paper's groups first in its order, then any other group, each with its evaluations."""
    by_group: dict[str, list[str]] = {}
    for name in suite.evaluations:
        by_group.setdefault(getattr(get(name), "group", "other"), []).append(name)
    ordered = [g for g in GROUPS if g in by_group] + [g for g in by_group if g not in GROUPS]
    tables = []
    for group in ordered:
        table, title = GROUPS.get(group, ("", group.replace("_", " ").capitalize()))
        evaluations = [{"evaluation": name,
                        "columns": [asdict(c) for c in _columns(cells, name, suite.columns.get(name))]}
                       for name in by_group[group]]
        tables.append({"group": group, "table": table, "title": title, "evaluations": evaluations})
    return tables


def _relative(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def cell_record(cell: Cell, out: Path) -> dict[str, Any]:
    """Everything the outputs show of one cell; paths relative to the report folder."""
    record: dict[str, Any] = {
        "row": cell.row, "evaluation": cell.evaluation, "status": cell.status,
        "folder": _relative(cell.folder, out), "error": cell.error, "traceback": cell.details or None,
        "metrics": {}, "kinds": {}, "coverage": None, "seconds": None, "versions": {}, "pictures": [],
        "skipped": 0, "summary": None,
        "settings": cell_settings(cell) if cell.settings is not None else dict(cell.options),
    }
    result = cell.result
    if result is None:
        return record
    coverage = result.coverage
    summary = cell.folder / "result.md"
    record.update(
        metrics={name: metric.value for name, metric in result.metrics.items()},
        kinds={name: metric.kind for name, metric in result.metrics.items()},
        coverage={"used": coverage.used, "expected": coverage.expected, "note": coverage.note,
                  "partial": coverage.partial},
        seconds=result.seconds, versions=dict(result.versions), settings=dict(result.settings),
        encoder=dict(result.encoder), skipped=len(result.skipped),
        pictures=[_relative(cell.folder / picture, out) for picture in result.pictures],
        summary=_relative(summary, out) if summary.is_file() else None,
    )
    return record


def _row_record(suite: Suite, name: str) -> dict[str, Any]:
    if name in suite.encoders:
        entry = suite.encoders[name]
        spec = entry.spec
        return {"name": name, "kind": "encoder", "encoder": spec.encoder,
                "weights": str(spec.weights) if spec.weights else None, "random_init": spec.random_init,
                "classifier": entry.classifier}
    return {"name": name, "kind": "reference", "evaluations": list(suite.references[name].options)}


def build_document(suite: Suite, run: GridRun, out: Path) -> dict[str, Any]:
    cells = run.cells
    return {
        "format": FORMAT,
        "suite": str(suite.path),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "counts": {"cells": len(cells), "computed": len(run.computed), "failed": len(run.failed),
                   "cached": sum(c.status == CACHED for c in cells),
                   "current": sum(c.status in (CACHED, COMPUTED) for c in cells),
                   "marked_failed": sum(c.status == FAILED for c in cells)},
        "rows": [_row_record(suite, name) for name in suite.row_names],
        "groups": groups(suite, cells),
        "cells": [cell_record(cell, out) for cell in cells],
    }


def write_document(document: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    write_json(path, document)
    return path


def cell_index(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(cell["row"], cell["evaluation"]): cell for cell in document["cells"]}


# Cell states as the tables show them (shared by the markdown and HTML writers).
MISSING, PARTIAL, ABSENT = "missing", "partial", "absent"


def display(cell: dict[str, Any] | None, column: dict[str, Any]) -> tuple[str, str]:
    """``(text, state)`` of one table entry: a formatted value (``ok``/``partial``), ``failed``, ``missing``
    (the cell is not computed), or ``absent`` (no such cell, e.g. a reference row's other evaluations)."""
    metric, kind = column["metric"], column["kind"]
    if cell is None:
        return "", ABSENT
    if cell["status"] == FAILED:
        return "✗ failed", FAILED
    if cell["status"] not in (CACHED, COMPUTED):
        return "—", MISSING
    if metric not in cell["metrics"]:
        return "", ABSENT
    text = table_value(cell["metrics"][metric], kind)
    coverage = cell["coverage"]
    if coverage and coverage["partial"]:
        return f"{text} †", PARTIAL
    return text, "ok"


def coverage_text(coverage: dict[str, Any] | None) -> str:
    if not coverage:
        return ""
    text = f"{coverage['used']}/{coverage['expected']}"
    return f"{text} ({coverage['note']})" if coverage.get("note") else text


def shared_settings(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Settings common to all ``cells`` (one evaluation's) and, per row, the ones that differ."""
    if not cells:
        return {}, {}
    keys = list(dict.fromkeys(k for cell in cells for k in cell["settings"]))
    common = {k: cells[0]["settings"].get(k) for k in keys
              if all(k in c["settings"] and c["settings"][k] == cells[0]["settings"][k] for c in cells)}
    differing = {c["row"]: {k: v for k, v in c["settings"].items() if k not in common} for c in cells}
    return common, {row: values for row, values in differing.items() if values}


def versions(document: dict[str, Any]) -> dict[str, list[str]]:
    """Each package's versions over all current cells (more than one: cells computed at different times)."""
    found: dict[str, list[str]] = {}
    for cell in document["cells"]:
        for package, version in cell["versions"].items():
            if str(version) not in found.setdefault(package, []):
                found[package].append(str(version))
    return found
