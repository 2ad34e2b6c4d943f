"""``report.md``: the report's tables as markdown, for a pull request, a notebook or a terminal.

Same content as ``index.html`` (same document, same formatting), without pictures; links point at each
cell's folder relative to the report folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vito.io import atomic_write
from vito.report.document import ABSENT, cell_index, column_label, coverage_text, display, shared_settings, versions
from vito.report.grid import CACHED, COMPUTED, FAILED


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row_label(row: dict[str, Any]) -> str:
    return f"*{row['name']}* (reference)" if row["kind"] == "reference" else f"**{row['name']}**"


def group_table(document: dict[str, Any], group: dict[str, Any]) -> list[str]:
    columns = [column for evaluation in group["evaluations"] for column in evaluation["columns"]]
    cells = cell_index(document)
    header = ["encoder"] + [_escape(f"{c['evaluation']} · {column_label(c)}") for c in columns]
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for row in document["rows"]:
        entries = [display(cells.get((row["name"], c["evaluation"])), c) for c in columns]
        if all(state == ABSENT for _, state in entries):
            continue
        lines.append(f"| {_row_label(row)} | " + " | ".join(_escape(text) for text, _ in entries) + " |")
    return lines


def _cells_table(document: dict[str, Any]) -> list[str]:
    lines = ["| row | evaluation | status | time (s) | coverage | skipped | folder |", "|---|---|---|---|---|---|---|"]
    for cell in document["cells"]:
        seconds = f"{cell['seconds']:.1f}" if cell["seconds"] is not None else ""
        target = cell["summary"] or cell["folder"]
        flag = " †" if cell["coverage"] and cell["coverage"]["partial"] else ""
        lines.append(f"| {cell['row']} | {cell['evaluation']} | {cell['status']} | {seconds} | "
                     f"{_escape(coverage_text(cell['coverage']))}{flag} | {cell['skipped'] or ''} | "
                     f"[{cell['folder']}]({target}) |")
    return lines


def _value(value: Any) -> str:
    return _escape(json.dumps(value, ensure_ascii=False, default=str))


def _settings(document: dict[str, Any]) -> list[str]:
    lines = []
    for group in document["groups"]:
        for evaluation in group["evaluations"]:
            name = evaluation["evaluation"]
            cells = [c for c in document["cells"] if c["evaluation"] == name]
            common, differing = shared_settings(cells)
            lines += ["", f"**{name}**: " + ", ".join(f"`{k}` = {_value(v)}" for k, v in common.items())]
            lines += [f"- {row}: " + ", ".join(f"`{k}` = {_value(v)}" for k, v in values.items())
                      for row, values in differing.items()]
    return lines


def render(document: dict[str, Any]) -> str:
    counts = document["counts"]
    lines = [
        "# vito report", "",
        f"Suite `{document['suite']}`, generated {document['generated']}. {counts['cells']} cells: "
        f"{counts['computed']} computed in this run, {counts['cached']} reused, {counts['marked_failed']} failed.",
        "", "Proportions in percent (%). † partial coverage (fewer items than the benchmark lists; see Cells), "
        "✗ failed (see Failures), — not computed.",
    ]
    for group in document["groups"]:
        title = f"{group['table']} · {group['title']}" if group["table"] else group["title"]
        lines += ["", f"## {title}", ""] + group_table(document, group)
    failures = [c for c in document["cells"] if c["status"] == FAILED]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{c['row']} × {c['evaluation']}**: {_escape(c['error'])}" for c in failures]
    partial = [c for c in document["cells"] if c["coverage"] and c["coverage"]["partial"]]
    if partial:
        lines += ["", "## Partial coverage", ""]
        lines += [f"- {c['row']} × {c['evaluation']}: {_escape(coverage_text(c['coverage']))}" for c in partial]
    missing = [c for c in document["cells"] if c["status"] not in (CACHED, COMPUTED, FAILED)]
    if missing:
        lines += ["", "Not computed: " + ", ".join(f"{c['row']} × {c['evaluation']}" for c in missing) + "."]
    lines += ["", "## Cells", ""] + _cells_table(document)
    lines += ["", "## Settings"] + _settings(document)
    found = versions(document)
    if found:
        lines += ["", "## Package versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {package} | {', '.join(values)} |" for package, values in found.items()]
    return "\n".join(lines) + "\n"


def write_markdown(document: dict[str, Any], out: Path) -> Path:
    path = out / "report.md"
    with atomic_write(path) as handle:
        handle.write(render(document))
    return path

