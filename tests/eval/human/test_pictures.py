"""Pictures of the human benchmarks: the model-vs-human table is readable (headers apart, humans row present);
ClickMe overlays of two models, and of runs whose examples file is broken."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from vito.errors import DataError  # noqa: E402
from vito.eval.human.clickme_data import EXAMPLES  # noqa: E402
from vito.eval.human.pictures import (  # noqa: E402
    cell_text,
    compare_clickme,
    consistency_table_figure,
    plot_saliency_overlays,
)
from vito.eval.human.result_store import TABLE_COLUMNS, row_label, table_rows  # noqa: E402
from vito.eval.human.scoring import score_responses_file  # noqa: E402


def test_consistency_table_headers_do_not_overlap_and_humans_have_a_row(shared_data) -> None:
    folder = shared_data / "model-vs-human" / "raw-data" / "edge"
    result = score_responses_file(sorted(folder.glob("*.csv"))[0], folder)
    rows = table_rows({row_label(result): result})
    assert [label for label, _ in rows] == ["subject-01 (edge)", "humans, subject pairs (edge)"]
    cells = [[cell_text(values.get(key)) for key, _ in TABLE_COLUMNS] for _, values in rows]
    figure = consistency_table_figure([label for label, _ in rows], [t for _, t in TABLE_COLUMNS], cells)
    figure.canvas.draw()  # lays the table out
    renderer = figure.canvas.get_renderer()
    table = figure.axes[0].tables[0]
    headers = sorted((cell for (row, column), cell in table.get_celld().items() if row == 0 and column >= 0),
                     key=lambda cell: cell.get_x())
    boxes = [cell.get_text().get_window_extent(renderer) for cell in headers]
    assert len(boxes) == len(TABLE_COLUMNS)
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))  # no title runs into the next
    cells_boxes = [cell.get_window_extent(renderer) for cell in headers]
    assert all(text.x0 >= box.x0 - 1 and text.x1 <= box.x1 + 1 for text, box in zip(boxes, cells_boxes))


def test_overlay_picture_with_two_models(tmp_path):
    pixels = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    maps = np.random.default_rng(0).random((2, 16, 16))
    out = plot_saliency_overlays(pixels, maps, {"vito": maps, "supervised": maps[:, ::-1]}, tmp_path / "fig.png")
    assert out.stat().st_size > 1000


def test_clickme_compare_with_a_truncated_examples_file_is_a_data_error(tmp_path: Path) -> None:
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        (tmp_path / run / EXAMPLES).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="unreadable ClickMe examples of an earlier run"):
        compare_clickme([tmp_path / "one", tmp_path / "two"], tmp_path / "out")
