"""``report.md``: the report's tables as markdown, for a pull request, a notebook or a terminal.

Same content as ``index.html`` (same document, same formatting), without pictures; links point at each
cell's folder relative to the report folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vito.io import atomic_write
from vito.report.aggregate import seeds_label
from vito.report.document import (
    ABSENT,
    LEGEND,
    cell_index,
    column_label,
    coverage_text,
    display,
    shared_settings,
    versions,
)
from vito.report.grid import CACHED, COMPUTED, FAILED


def _escape(text: object) -> str:
    """Text a user supplied (names, paths, error messages, settings) as literal markdown text: HTML's ``& < >``
    as entities (a path ``<iframe ...>`` must not become a tag where report.md is rendered, as index.html escapes
    it too), a table's ``|`` escaped, one line."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\n", " "))


def _code(text: object) -> str:
    """``text`` as a code span (shown literally, HTML included) long enough that no backtick inside ends it; a
    table's ``|`` is escaped even there (GitHub's tables split on it first)."""
    text = str(text).replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _row_label(row: dict[str, Any]) -> str:
    name = _escape(row["name"])
    if row["kind"] == "pretrain":
        changed = ", ".join(row.get("differs", row["set"])) or "the preset's values"
        return f"**{name}** ({seeds_label(len(row['seeds']))}; {_escape(changed)})"
    return f"*{name}* (reference)" if row["kind"] == "reference" else f"**{name}**"


def group_table(document: dict[str, Any], group: dict[str, Any]) -> list[str]:
    columns = [column for evaluation in group["evaluations"] for column in evaluation["columns"]]
    cells = cell_index(document)
    header = ["encoder"] + [_escape(f"{c['entry']} · {column_label(c)}") for c in columns]
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for row in document["rows"]:
        entries = [display(cells.get((row["name"], c["entry"])), c) for c in columns]
        if all(state == ABSENT for _, state in entries):
            continue
        lines.append(f"| {_row_label(row)} | " + " | ".join(_escape(text) for text, _ in entries) + " |")
    return lines


def _cells_table(document: dict[str, Any]) -> list[str]:
    lines = ["| row | seed | entry | status | time (s) | coverage | skipped | folder |",
             "|---|---|---|---|---|---|---|---|"]
    for cell in document["cells"]:
        seconds = f"{cell['seconds']:.1f}" if cell["seconds"] is not None else ""
        target = cell["summary"] or cell["folder"]
        flag = " †" if cell["coverage"] and cell["coverage"]["partial"] else ""
        seed = "" if cell["seed"] is None else cell["seed"]
        lines.append(f"| {_escape(cell['row'])} | {seed} | {_escape(cell['entry'])} | {cell['status']} | {seconds} | "
                     f"{_escape(coverage_text(cell['coverage']))}{flag} | {cell['skipped'] or ''} | "
                     f"[{_escape(cell['folder'])}]({quote(str(target))}) |")
    return lines


def _value(value: Any) -> str:
    return _escape(json.dumps(value, ensure_ascii=False, default=str))


def _settings(document: dict[str, Any]) -> list[str]:
    lines = []
    for group in document["groups"]:
        for evaluation in group["evaluations"]:
            name = evaluation["entry"]
            cells = [c for c in document["cells"] if c["entry"] == name]
            common, differing = shared_settings(cells)
            lines += ["", f"**{_escape(name)}**: " + ", ".join(f"`{k}` = {_value(v)}" for k, v in common.items())]
            lines += [f"- {_escape(row)}: " + ", ".join(f"`{k}` = {_value(v)}" for k, v in values.items())
                      for row, values in differing.items()]
    return lines


def _cell_name(cell: dict[str, Any]) -> str:
    seed = f" seed {cell['seed']}" if cell["seed"] is not None else ""
    return f"{cell['row']}{seed} × {cell['entry']}"


def render(document: dict[str, Any]) -> str:
    counts = document["counts"]
    lines = [
        "# vito report", "",
        f"Suite {_code(document['suite'])}, generated {document['generated']}. {counts['cells']} cells: "
        f"{counts['computed']} computed in this run, {counts['cached']} reused, {counts['marked_failed']} failed.",
        "", LEGEND,
    ]
    if document.get("common_set"):
        lines += ["", f"Every pretraining row sets {_code(', '.join(document['common_set']))}."]
    for group in document["groups"]:
        title = f"{group['table']} · {group['title']}" if group["table"] else group["title"]
        lines += ["", f"## {title}", ""] + group_table(document, group)
    for plot in document.get("plots", []):
        lines += ["", f"## Plot: {_escape(plot['title'])}", "", f"{_escape(plot['caption'])}", ""]
        lines += [f"![{_escape(plot['title'])}]({quote(plot['png'])}) ([SVG]({quote(plot['svg'])}))"
                  if plot.get("png") else f"Not drawn: {_escape(plot['error'])}"]
    failures = [c for c in document["cells"] if c["status"] == FAILED]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{_escape(_cell_name(c))}**: {_escape(c['error'])}" for c in failures]
    partial = [c for c in document["cells"] if c["coverage"] and c["coverage"]["partial"]]
    if partial:
        lines += ["", "## Partial coverage", ""]
        lines += [f"- {_escape(_cell_name(c))}: {_escape(coverage_text(c['coverage']))}" for c in partial]
    missing = [c for c in document["cells"] if c["status"] not in (CACHED, COMPUTED, FAILED)]
    if missing:
        lines += ["", "Not computed: " + ", ".join(_escape(_cell_name(c)) for c in missing) + "."]
    lines += ["", "## Cells", ""] + _cells_table(document)
    lines += ["", "## Settings"] + _settings(document)
    found = versions(document)
    if found:
        lines += ["", "## Package versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {_escape(package)} | {_escape(', '.join(values))} |" for package, values in found.items()]
    return "\n".join(lines) + "\n"


def write_markdown(document: dict[str, Any], out: Path) -> Path:
    path = out / "report.md"
    with atomic_write(path) as handle:
        handle.write(render(document))
    return path

