"""Model-vs-human's result files: earlier runs read back into one table (`--compare`), and ones that are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from vito.errors import DataError
from vito.eval.human.result_store import DETAILS, load_results


def test_consistency_table_of_several_results(shared_data, tmp_path):
    folder = shared_data / "model-vs-human" / "raw-data" / "edge"
    files = sorted(folder.glob("*.csv"))
    from vito.cli import main

    for path in files[:2]:
        assert main(["eval", "model-vs-human", "--responses", str(path), "--raw-data", str(folder),
                     "--out", str(tmp_path / path.stem)]) == 0
    assert main(["eval", "model-vs-human", "--out", str(tmp_path / "table"),
                 "--compare", *[str(tmp_path / p.stem) for p in files[:2]]]) == 0
    table = (tmp_path / "table" / "result.md").read_text()
    assert "| subject-01 (edge) |" in table and "| subject-02 (edge) |" in table
    assert "| humans, subject pairs (edge) |" in table
    assert (tmp_path / "table" / "model_vs_human.png").stat().st_size > 1000


@pytest.mark.parametrize("text", ["{", "[]", '{"datasets": {}}'])
def test_human_compare_with_a_malformed_earlier_result_is_a_data_error(tmp_path: Path, text: str) -> None:
    (tmp_path / DETAILS).write_text(text)
    with pytest.raises(DataError, match="model_vs_human.json is not a"):
        load_results([tmp_path])
