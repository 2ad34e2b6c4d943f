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
from vito.report.aggregate import UNDEFINED, aggregate
from vito.report.grid import CACHED, CELLS_DIR, COMPUTED, FAILED, Cell, GridRun, cell_settings
from vito.report.study import folder_name, run_folder
from vito.report.suite import Suite

FORMAT = "vito-report/2"  # 2: entries, seeds, aggregates, plots
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
    evaluation: str  # the entry's registered evaluation
    metric: str
    label: str
    kind: str
    entry: str = ""  # the suite's evaluation entry (the column group's header)


def table_value(value: float | None, kind: str, sd: float | None = None) -> str:
    """A metric as the report's tables show it, compactly: proportions in percent with one decimal, signed
    values with their sign, counts whole (``format_value`` is the longer form of each cell's result.md); with
    ``sd``, ``mean ± sd`` in the same unit. Undefined: :data:`UNDEFINED`, the one sign for it everywhere."""
    if value is None:
        return UNDEFINED
    if kind == "proportion":
        text, spread = f"{100 * value:.1f}", None if sd is None else f"{100 * sd:.1f}"
    elif kind == "signed":
        text, spread = f"{value:+.3f}", None if sd is None else f"{sd:.3f}"
    elif kind == "count":
        text, spread = f"{value:.0f}", None if sd is None else f"{sd:.1f}"
    else:
        text, spread = f"{value:.4g}", None if sd is None else f"{sd:.2g}"
    return text if spread is None else f"{text} ± {spread}"


# The unit each kind of metric carries in a header: no number sits unmarked among percentages.
UNITS = {"proportion": "%", "signed": "±, not %", "count": "count", "value": "value, not %"}
SHORT_LABEL = 24  # a longer label (COCO's "bbox AP @[IoU=0.50:0.95, ...]") is a tooltip; the header is its key


def column_label(column: dict[str, Any]) -> str:
    """A column's header: the metric's label when short (else its key), with its unit."""
    label = column["label"] if column["label"] and len(column["label"]) <= SHORT_LABEL else column["metric"]
    return f"{label} ({UNITS[column['kind']]})" if column["metric"] and column["kind"] in UNITS else label


def _columns(cells: list[Cell], entry: str, evaluation: str, chosen: list[str] | None) -> list[Column]:
    """The metrics of ``entry``'s cells: the ``chosen`` ones (``columns:``) in their order, else the
    evaluation's headline metric, else every metric in the order the first cell that has each lists them. An
    entry without any result yet gets one placeholder column, so that its failed cells still show."""
    results = [cell.result for cell in cells if cell.entry == entry and cell.result is not None]
    columns: dict[str, Column] = {}
    for result in results:
        for name, metric in result.metrics.items():
            columns.setdefault(name, Column(evaluation, name, metric.label, metric.kind, entry))
    if chosen is not None and columns:
        return [columns.get(name, Column(evaluation, name, f"{name} (no such metric)", "missing", entry))
                for name in chosen]
    headline = getattr(get(evaluation), "headline", None)
    if headline in columns:
        return [columns[headline]]
    shown: list[Column] = []
    for column in columns.values():  # an alias (kNN's headline top1 = top1_k20) is shown once
        if not any(_same_numbers(results, column, other) for other in shown):
            shown.append(column)
    return shown or [Column(evaluation, "", "no result yet", "value", entry)]


def _same_numbers(results: list[Result], a: Column, b: Column) -> bool:
    """Whether two columns are one metric under two names: same label and the same value in every cell."""
    if (a.label or a.metric) != (b.label or b.metric):
        return False
    values = [(r.metrics.get(a.metric), r.metrics.get(b.metric)) for r in results]
    return all(x is not None and y is not None and x.value == y.value for x, y in values)


def groups(suite: Suite, cells: list[Cell]) -> list[dict[str, Any]]:
    """The tables: the paper's groups first in its order, then any other group, each with its evaluations."""
    by_group: dict[str, list[str]] = {}
    for name, entry in suite.evaluations.items():
        by_group.setdefault(getattr(get(entry.evaluation), "group", "other"), []).append(name)
    ordered = [g for g in GROUPS if g in by_group] + [g for g in by_group if g not in GROUPS]
    tables = []
    for group in ordered:
        table, title = GROUPS.get(group, ("", group.replace("_", " ").capitalize()))
        evaluations = [{"entry": name, "evaluation": suite.evaluations[name].evaluation,
                        "columns": [asdict(c) for c in _columns(cells, name, suite.evaluations[name].evaluation,
                                                                 suite.columns.get(name))]}
                       for name in by_group[group]]
        tables.append({"group": group, "table": table, "title": title, "evaluations": evaluations})
    return tables


def _relative(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def cell_record(cell: Cell, out: Path) -> dict[str, Any]:
    """Everything the outputs show of one cell; paths relative to the report folder."""
    record: dict[str, Any] = {
        "row": cell.row, "entry": cell.entry, "seed": cell.seed, "evaluation": cell.evaluation, "status": cell.status,
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


def _row_record(suite: Suite, name: str, out: Path) -> dict[str, Any]:
    if name in suite.encoders and suite.encoders[name].pretrain is not None:
        entry, row = suite.encoders[name], suite.encoders[name].pretrain
        return {"name": name, "kind": "pretrain", "folder": entry.folder, "config": row.config, "data": row.data,
                "set": list(row.overrides), "seeds": list(row.seeds),
                "runs": [_relative(run_folder(out, entry.folder, seed), out) for seed in row.seeds]}
    if name in suite.encoders:
        entry = suite.encoders[name]
        spec = entry.spec
        return {"name": name, "kind": "encoder", "folder": entry.folder, "encoder": spec.encoder,
                "weights": str(spec.weights) if spec.weights else None, "random_init": spec.random_init,
                "classifier": entry.classifier}
    return {"name": name, "kind": "reference", "folder": folder_name(name),
            "evaluations": list(suite.references[name].options)}


def _mark_differences(rows: list[dict[str, Any]]) -> list[str]:
    """Give each pretraining row its ``differs``: the ``set:`` values not shared by every pretraining row (what
    the row headers show); the shared ones are returned, said once under the tables."""
    trained = [row for row in rows if row["kind"] == "pretrain"]
    common = [item for item in (trained[0]["set"] if trained else []) if all(item in row["set"] for row in trained)]
    for row in trained:
        row["differs"] = [item for item in row["set"] if item not in common]
    return common if len(trained) > 1 else []


def _aggregates(suite: Suite, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pretraining row and entry, the mean ± sd record over its seeds' cells (:mod:`vito.report.aggregate`)."""
    found = []
    for name, entry in suite.encoders.items():
        if entry.pretrain is None:
            continue
        for entry_name in suite.evaluations:
            cells = [c for c in records if c["row"] == name and c["entry"] == entry_name and c["seed"] is not None]
            if cells:
                found.append(aggregate(cells, f"{CELLS_DIR}/{entry.folder}"))
    return found


def build_document(suite: Suite, run: GridRun, out: Path) -> dict[str, Any]:
    cells = run.cells
    records = [cell_record(cell, out) for cell in cells]
    rows = [_row_record(suite, name, out) for name in suite.row_names]
    common = _mark_differences(rows)
    return {
        "format": FORMAT,
        "suite": str(suite.path),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "counts": {"cells": len(cells), "computed": len(run.computed), "failed": len(run.failed),
                   "cached": sum(c.status == CACHED for c in cells),
                   "current": sum(c.status in (CACHED, COMPUTED) for c in cells),
                   "marked_failed": sum(c.status == FAILED for c in cells)},
        "rows": rows,
        "common_set": common,
        "groups": groups(suite, cells),
        "cells": records,
        "aggregates": _aggregates(suite, records),
        "failed_runs": [{"row": row, "seed": seed, "error": error} for (row, seed), error in run.failed_runs.items()],
    }


def write_document(document: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    write_json(path, document)
    return path


def cell_index(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """What a table shows per (row, entry): the cell, or for a pretraining row its seeds' aggregate."""
    index = {(cell["row"], cell["entry"]): cell for cell in document["cells"] if cell["seed"] is None}
    index.update({(record["row"], record["entry"]): record for record in document.get("aggregates", [])})
    return index


LEGEND = ("Units in each header: (%) percent; (±, not %) a signed value such as a decay or Cohen's κ; (value, not %) "
          "a unitless number; (count) a count. A pretraining row shows the mean ± sd over its seeds (sample sd; "
          f"one seed: its value, no sd). {UNDEFINED}: undefined (a row's value when any seed's cell failed ✗, is partial † or "
          "not computed). † partial coverage (fewer items than the benchmark lists; see Cells), ✗ failed (see "
          "Failures), — not computed.")

# Cell states as the tables show them (shared by the markdown and HTML writers).
MISSING, PARTIAL, ABSENT = "missing", "partial", "absent"


def display(cell: dict[str, Any] | None, column: dict[str, Any]) -> tuple[str, str]:
    """``(text, state)`` of one table entry: a formatted value (``ok``/``partial``), ``failed``, ``missing``
    (the cell is not computed), or ``absent`` (no such cell, e.g. a reference row's other evaluations)."""
    metric, kind = column["metric"], column["kind"]
    if cell is None:
        return "", ABSENT
    seeded = cell.get("aggregate", False)  # a pretraining row: undefined unless every seed's cell is sound
    if cell["status"] == FAILED:
        return (f"{UNDEFINED} ✗" if seeded else "✗ failed"), FAILED
    if cell["status"] not in (CACHED, COMPUTED):
        return (UNDEFINED if seeded else "—"), MISSING
    if metric not in cell["metrics"]:
        return "", ABSENT
    text = table_value(cell["metrics"][metric], kind, cell["sd"].get(metric) if seeded else None)
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
