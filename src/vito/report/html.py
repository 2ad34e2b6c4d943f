"""``index.html``: the report as one self-contained page that opens from disk in any browser.

Why self-contained: a report folder is copied, zipped and mailed; the page must not need a server, a network,
scripts or a stylesheet beside it. Thumbnails are embedded as data URIs; the full pictures and each cell's own
evaluation folder are relative links inside the report folder, so they keep working wherever it is copied.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

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

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 360  # pixels, longest side

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 24px 32px;
       max-width: 1400px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta, .legend { color: #556; margin: 2px 0; }
table { border-collapse: collapse; margin: 6px 0 4px; }
th, td { border: 1px solid #d5d9e2; padding: 4px 10px; }
table.results td { text-align: right; font-variant-numeric: tabular-nums; min-width: 64px; }
table.results thead th { background: #eef1f7; font-weight: 600; }
table.results thead tr.evaluations th { background: #dde3ef; }
table.results tbody th { text-align: left; font-weight: 600; background: #fafbfd; }
tr.reference th, tr.reference td { font-style: italic; background: #f4f6fb; }
.spec { font-weight: 400; font-size: 12px; color: #667; font-style: normal; }
td.partial { background: #fff3cd; } td.failed { background: #fde7ea; color: #a1001c; }
td.missing { color: #99a; }
table.results td a { color: inherit; text-decoration: none; } table.results td a:hover { text-decoration: underline; }
.flag { color: #a15c00; font-weight: 700; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; border: 1px solid #d5d9e2; padding: 6px; background: #fff; }
figure img { display: block; max-width: 360px; height: auto; }
figcaption { font-size: 12px; color: #556; margin-top: 4px; max-width: 360px; }
figure.plot img { max-width: 640px; } figure.plot figcaption { max-width: 640px; }
table.results thead th { max-width: 160px; }
table.cells td { text-align: left; vertical-align: top; font-size: 13px; }
details pre { white-space: pre-wrap; font-size: 12px; margin: 4px 0; max-width: 760px; }
code { font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def thumbnail(path: Path) -> tuple[str, int, int] | None:
    """A PNG data URI of ``path`` scaled to ``THUMBNAIL_SIDE`` and its size, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            picture = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        log.warning("no thumbnail for %s: %s", path, error)
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}", *picture.size


def _row_header(row: dict[str, Any]) -> str:
    if row["kind"] == "reference":
        return f'<th scope="row">{_e(row["name"])}<div class="spec">reference</div></th>'
    if row["kind"] == "pretrain":
        changed = ", ".join(row.get("differs", row["set"])) or "the preset's values"
        spec = f"pretrained: {Path(row['config']).stem}, {changed} · {seeds_label(len(row['seeds']))}"
        return f'<th scope="row">{_e(row["name"])}<div class="spec">{_e(spec)}</div></th>'
    spec = row["encoder"] + (" (random init)" if row["random_init"] else "")
    if row["weights"]:
        spec += f" · {Path(row['weights']).name}"
    return f'<th scope="row">{_e(row["name"])}<div class="spec">{_e(spec)}</div></th>'


def _value_cell(cell: dict[str, Any] | None, column: dict[str, Any]) -> str:
    text, state = display(cell, column)
    if state == ABSENT:
        return '<td class="absent"></td>'
    href = _e(cell["folder"] + "/")
    if state == FAILED:
        return f'<td class="failed" title="{_e(cell["error"])}"><a href="{href}">{_e(text)}</a></td>'
    if cell["status"] not in (CACHED, COMPUTED):
        return f'<td class="missing" title="{_e(cell.get("reason") or "not computed")}">{_e(text)}</td>'
    value = cell["metrics"][column["metric"]]
    tip = [f"{column['metric']} = {value!r}", f"coverage {coverage_text(cell['coverage'])}"]
    if cell.get("aggregate"):
        tip = [f"{column['metric']}: mean {value!r}, sd {cell['sd'].get(column['metric'])!r}",
               "seeds " + ", ".join(f"{seed}: {v!r}" for seed, v in zip(cell["seeds"],
                                                                         cell["values"][column["metric"]]))]
        if cell["reason"]:
            tip.append(cell["reason"])
    if cell["seconds"] is not None:
        tip.append(f"{cell['seconds']:.1f} s")
    shown = _e(text).replace(" †", ' <span class="flag">†</span>')
    return (f'<td class="{state}" data-value="{_e(repr(value))}" title="{_e("; ".join(tip))}">'
            f'<a href="{href}">{shown}</a></td>')


def group_table(document: dict[str, Any], group: dict[str, Any]) -> str:
    evaluations = group["evaluations"]
    columns = [column for evaluation in evaluations for column in evaluation["columns"]]
    cells = cell_index(document)
    title = f"{group['table']} · {group['title']}" if group["table"] else group["title"]
    parts = [f'<section class="group" id="group-{_e(group["group"])}"><h2>{_e(title)}</h2>']
    parts.append('<table class="results"><thead><tr class="evaluations"><th rowspan="2">encoder</th>')
    parts += [f'<th colspan="{len(e["columns"])}" title="{_e(e["evaluation"])}">{_e(e["entry"])}</th>'
              for e in evaluations]
    parts.append("</tr><tr>" + "".join(f'<th title="{_e(c["label"] or c["metric"])}">{_e(column_label(c))}</th>'
                                       for c in columns) + "</tr></thead><tbody>")
    for row in document["rows"]:
        entries = [cells.get((row["name"], c["entry"])) for c in columns]
        if all(display(cell, c)[1] == ABSENT for cell, c in zip(entries, columns)):
            continue
        parts.append(f'<tr class="{row["kind"]}">{_row_header(row)}'
                     + "".join(_value_cell(cell, c) for cell, c in zip(entries, columns)) + "</tr>")
    parts.append("</tbody></table>")
    parts.append("</section>")
    return "\n".join(parts)


def picture_caption(cell: dict[str, Any], picture: str) -> str:
    """What a picture is: its name in words, and the cell it comes from (``cells/a/davis/car-shadow_masks.png``
    -> "car shadow masks: a seed 0 × davis")."""
    words = Path(picture).stem.replace("_", " ").replace("-", " ")
    seed = f" seed {cell['seed']}" if cell["seed"] is not None else ""
    return f"{words}: {cell['row']}{seed} × {cell['entry']} ({cell['evaluation']})"


def gallery(document: dict[str, Any], out: Path) -> str:
    figures = []
    for cell in document["cells"]:
        for picture in cell["pictures"]:
            embedded = thumbnail(out / picture)
            caption = picture_caption(cell, picture)
            if embedded is None:
                figures.append(f'<figure><a href="{_e(picture)}">{_e(Path(picture).name)}</a>'
                               f"<figcaption>{_e(caption)} (no preview)</figcaption></figure>")
                continue
            uri, width, height = embedded
            figures.append(f'<figure><a href="{_e(picture)}"><img src="{uri}" width="{width}" height="{height}" '
                           f'alt="{_e(caption)}"></a><figcaption>{_e(caption)}</figcaption></figure>')
    if not figures:
        return ""
    return '<section id="pictures"><h2>Pictures</h2><div class="gallery">' + "\n".join(figures) + "</div></section>"


def plots_section(document: dict[str, Any], out: Path) -> str:
    """The study's plots, embedded (a PNG data URI, full size), linked to their PNG and SVG files."""
    figures = []
    for plot in document.get("plots", []):
        caption = _e(plot["caption"])
        if not plot.get("png"):
            figures.append(f'<figure class="plot"><figcaption><b>{_e(plot["title"])}</b>: not drawn: '
                           f'{_e(plot["error"])}</figcaption></figure>')
            continue
        data = base64.b64encode((out / plot["png"]).read_bytes()).decode("ascii")
        figures.append(f'<figure class="plot"><a href="{_e(plot["svg"])}"><img src="data:image/png;base64,{data}" '
                       f'alt="{_e(plot["title"])}"></a><figcaption><b>{_e(plot["title"])}</b>: {caption} '
                       f'(<a href="{_e(plot["png"])}">PNG</a>, <a href="{_e(plot["svg"])}">SVG</a>)</figcaption>'
                       "</figure>")
    if not figures:
        return ""
    return '<section id="plots"><h2>Plots</h2><div class="gallery">' + "\n".join(figures) + "</div></section>"


def _json(value: Any) -> str:
    return _e(json.dumps(value, indent=1, ensure_ascii=False, default=str))


def cells_table(document: dict[str, Any]) -> str:
    parts = ['<section id="cells"><h2>Cells</h2><table class="cells"><thead><tr><th>row</th><th>seed</th>'
             "<th>entry</th><th>status</th><th>time (s)</th><th>coverage</th><th>skipped</th><th>folder</th><th>details</th>"
             "</tr></thead><tbody>"]
    for cell in document["cells"]:
        seconds = f"{cell['seconds']:.1f}" if cell["seconds"] is not None else ""
        partial = cell["coverage"] and cell["coverage"]["partial"]
        coverage = _e(coverage_text(cell["coverage"])) + (' <span class="flag">† partial</span>' if partial else "")
        links = f'<a href="{_e(cell["folder"])}/">{_e(cell["folder"])}</a>'
        if cell["summary"]:
            links += f' · <a href="{_e(cell["summary"])}">result.md</a>'
        details = f"<details><summary>settings</summary><pre>{_json(cell['settings'])}</pre></details>"
        if cell["error"]:
            details = (f"<details open><summary>error</summary><pre>{_e(cell['error'])}"
                       f"{chr(10) + _e(cell['traceback']) if cell['traceback'] else ''}</pre></details>" + details)
        seed = "" if cell["seed"] is None else cell["seed"]
        parts.append(f"<tr><td>{_e(cell['row'])}</td><td>{seed}</td><td>{_e(cell['entry'])}</td>"
                     f"<td>{_e(cell['status'])}</td>"
                     f"<td>{seconds}</td><td>{coverage}</td><td>{cell['skipped'] or ''}</td><td>{links}</td>"
                     f"<td>{details}</td></tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def settings_section(document: dict[str, Any]) -> str:
    parts = ['<section id="settings"><h2>Settings</h2>']
    for group in document["groups"]:
        for evaluation in group["evaluations"]:
            name = evaluation["entry"]
            common, differing = shared_settings([c for c in document["cells"] if c["entry"] == name])
            items = "".join(f"<li><code>{_e(k)}</code> = <code>{_json(v)}</code></li>" for k, v in common.items())
            items += "".join(f"<li>{_e(row)}: " + ", ".join(f"<code>{_e(k)}</code> = <code>{_json(v)}</code>"
                                                             for k, v in values.items()) + "</li>"
                             for row, values in differing.items())
            parts.append(f"<h3>{_e(name)}</h3><ul>{items}</ul>")
    found = versions(document)
    if found:
        parts.append("<h2>Package versions</h2><table><tbody>" + "".join(
            f"<tr><th>{_e(package)}</th><td>{_e(', '.join(values))}</td></tr>" for package, values in found.items())
            + "</tbody></table>")
    parts.append("</section>")
    return "\n".join(parts)


def render(document: dict[str, Any], out: Path) -> str:
    counts = document["counts"]
    head = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>vito report</title>'
            f"<style>{STYLE}</style></head><body>")
    intro = (f"<header><h1>vito report</h1><p class=\"meta\">Suite <code>{_e(document['suite'])}</code>, generated "
             f"{_e(document['generated'])}. {counts['cells']} cells: {counts['computed']} computed in this run, "
             f"{counts['cached']} reused, {counts['marked_failed']} failed.</p>"
             + (f'<p class="meta">Every pretraining row sets {_e(", ".join(document["common_set"]))}; each row '
                "header names what else it sets.</p>" if document.get("common_set") else "")
             + f'<p class="legend">{_e(LEGEND)} Each value links to its cell\'s folder; hover for the unrounded '
             "value (and each seed's).</p></header>")
    body = [group_table(document, group) for group in document["groups"]]
    body += [plots_section(document, out), gallery(document, out), cells_table(document),
             settings_section(document)]
    return head + intro + "\n".join(part for part in body if part) + "\n</body></html>\n"


def write_html(document: dict[str, Any], out: Path) -> Path:
    path = out / "index.html"
    with atomic_write(path) as handle:
        handle.write(render(document, out))
    return path
