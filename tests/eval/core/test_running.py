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


def test_a_rerun_that_differs_only_in_num_workers_is_the_same_run(tmp_path: Path) -> None:
    """Batches do not depend on the worker count (tests/eval/dense/segmentation/test_data.py), so --num-workers
    names no other run: its rerun into the folder is accepted; another lr is still refused."""
    from vito.eval.core.encoder_spec import EncoderSpec
    from vito.eval.core.registry import get, recorded_settings
    from vito.eval.core.result import Coverage, Result
    from vito.eval.core.result_writer import write_result
    from vito.eval.core.running import check_out_dir

    spec = EncoderSpec("timm:resnet18", random_init=True)
    segment = get("segment")

    def settings(**values):
        return settings_from_mapping(segment, {"dataset": "voc", "root": tmp_path, "num_workers": 4, **values})

    previous = Result("segment", {}, recorded_settings(segment, settings(), True), Coverage(1, 1),
                      encoder=spec.describe())
    write_result(previous, tmp_path / "out")
    check_out_dir("segment", settings(num_workers=0), tmp_path / "out", spec.describe())
    with pytest.raises(VitoError, match="already holds another run's result .*lrs"):
        check_out_dir("segment", settings(num_workers=0, lrs=[0.5]), tmp_path / "out", spec.describe())
