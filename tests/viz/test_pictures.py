"""Pictures: viz/ is a leaf, and the model-vs-human table is readable (headers apart, humans row present)."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import vito.viz  # noqa: E402
from vito.eval.human import scoring as human  # noqa: E402
from vito.eval.human.pictures import consistency_table_figure  # noqa: E402


def test_viz_imports_nothing_from_eval_or_curate() -> None:
    for path in Path(vito.viz.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith(("vito.eval", "vito.curate"))], path.name


def test_consistency_table_headers_do_not_overlap_and_humans_have_a_row(shared_data) -> None:
    folder = shared_data / "model-vs-human" / "raw-data" / "edge"
    result = human.score_responses_file(sorted(folder.glob("*.csv"))[0], folder)
    rows = human.table_rows({human.row_label(result): result})
    assert [label for label, _ in rows] == ["subject-01 (edge)", "humans, subject pairs (edge)"]
    cells = [[human._cell(values.get(key)) for key, _ in human.TABLE_COLUMNS] for _, values in rows]
    figure = consistency_table_figure([label for label, _ in rows], [t for _, t in human.TABLE_COLUMNS], cells)
    figure.canvas.draw()  # lays the table out
    renderer = figure.canvas.get_renderer()
    table = figure.axes[0].tables[0]
    headers = sorted((cell for (row, column), cell in table.get_celld().items() if row == 0 and column >= 0),
                     key=lambda cell: cell.get_x())
    boxes = [cell.get_text().get_window_extent(renderer) for cell in headers]
    assert len(boxes) == len(human.TABLE_COLUMNS)
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))  # no title runs into the next
    cells_boxes = [cell.get_window_extent(renderer) for cell in headers]
    assert all(text.x0 >= box.x0 - 1 and text.x1 <= box.x1 + 1 for text, box in zip(boxes, cells_boxes))
