"""``run_evaluation``'s output folder checks: a run never replaces another run's Result, and an ``OUT`` that is a
file or holds a foreign result.json is refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.eval.dense.detection.helpers import tiny_instances
from tests.eval.dense.segmentation.layouts import score_voc, tiny_voc
from vito.errors import VitoError
from vito.eval.core.registry import settings_from_mapping
from vito.eval.core.result import read_result
from vito.eval.core.running import run_evaluation


def test_a_run_never_replaces_another_runs_result(tmp_path: Path) -> None:
    root = tiny_voc(tmp_path)
    out = tmp_path / "out"
    score_voc(root, out)
    score_voc(root, out)  # the same run again may replace itself
    before = (out / "result.json").read_text()
    other = tiny_voc(tmp_path / "other")
    with pytest.raises(VitoError, match=r"already holds another run's result \(.*: root, predictions\)"):
        score_voc(other, out)
    detect = {"dataset": "coco", "val_ann": tmp_path / "instances.json", "predictions": tmp_path / "results.json"}
    (tmp_path / "instances.json").write_text(json.dumps(tiny_instances()))
    (tmp_path / "results.json").write_text("[]")
    from vito.eval.core.registry import get

    with pytest.raises(VitoError, match="evaluation or encoder: evaluation segment.*give --overwrite"):
        run_evaluation("detect", settings_from_mapping(get("detect"), detect), out)
    assert (out / "result.json").read_text() == before and read_result(out).evaluation == "segment"


def test_out_that_is_a_file_or_holds_a_foreign_result_json_is_refused_before_running(tmp_path: Path) -> None:
    root = tiny_voc(tmp_path)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(VitoError, match="is a file, not a folder"):
        score_voc(root, tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "result.json").write_text('{"top1": 0.5}')
    with pytest.raises(VitoError, match="already holds a result.json that is not a vito result"):
        score_voc(root, tmp_path / "foreign")
    assert (tmp_path / "foreign" / "result.json").read_text() == '{"top1": 0.5}'
    assert (tmp_path / "file").read_text() == "mine"
