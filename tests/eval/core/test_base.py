"""The evaluation harness: Metric/Coverage/Result, the one writer, Settings from mappings and command lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.encoders import load_encoder
from vito.eval.core.result import Coverage, Metric, Result, mean_and_sd, read_result
from vito.eval.core.result_writer import write_result
from vito.eval.core.running import stamped_settings


def test_mean_and_sd_over_runs_is_undefined_on_partial_runs_and_for_one_run() -> None:
    mean, sd = mean_and_sd([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5) and sd == pytest.approx(0.3605551275463989)  # sample sd (ddof 1)
    assert mean_and_sd([0.7]) == (0.7, None)  # one seed: no sd, not 0
    assert mean_and_sd([0.2, None]) == (None, None) and mean_and_sd([0.2, float("nan")]) == (None, None)
    assert mean_and_sd([]) == (None, None)


def test_recorded_settings_never_replace_the_given_ones() -> None:
    """vito report compares a stored Result's settings with the suite's field by field: an evaluation that
    records a field it resolved must not make the Result look like one of other settings."""
    given = {"lrs": None, "root": Path("data"), "seeds": (0, 1)}
    recorded = {"lrs": [0.1, 0.01], "root": "data", "seeds": [0, 1], "protocol": {"head": "fcn"}}
    assert stamped_settings(given, recorded) == {"lrs": None, "root": "data", "seeds": [0, 1],
                                                 "protocol": {"head": "fcn"}, "lrs_as_run": [0.1, 0.01]}


def test_metric_checks_proportions_and_maps_nan_to_none() -> None:
    with pytest.raises(ValueError, match="outside"):
        Metric(61.2, "proportion", "top-1")  # a percent where a fraction belongs
    assert Metric(float("nan"), "signed").value is None
    assert Metric(-0.25, "signed").value == -0.25
    with pytest.raises(ValueError, match="kind"):
        Metric(1.0, "percent")


def _result() -> Result:
    return Result(
        evaluation="toy", metrics={"top1": Metric(1 / 3, "proportion", "top-1"), "kappa": Metric(None, "signed")},
        settings={"k": [10, 20], "root": Path("/data/x")}, coverage=Coverage(1, 1109, "anchors with all frames"),
        tables={"per class": [{"class": "a|b", "acc": 0.5}, {"class": "c", "acc": float("nan")}]},
        skipped=[("bad.jpg", "cannot identify image file")], artifacts={"head": "linear_head.pt"}, seconds=1.5,
    )


def test_write_result_is_unrounded_json_with_null_and_a_partial_markdown(tmp_path) -> None:
    write_result(_result(), tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["metrics"]["top1"]["value"] == 1 / 3  # unrounded
    assert data["metrics"]["kappa"]["value"] is None and data["tables"]["per class"][1]["acc"] is None
    assert data["coverage"] == {"used": 1, "expected": 1109, "note": "anchors with all frames", "training_skipped": 0,
                                "partial": True}
    assert data["settings"]["root"] == "/data/x"
    markdown = (tmp_path / "result.md").read_text()
    assert "PARTIAL" in markdown and "1 of 1109" in markdown and "bad.jpg" in markdown and "33.33 %" in markdown
    back = read_result(tmp_path)
    assert back.metrics == _result().metrics and back.coverage.partial and back.skipped == _result().skipped


def test_unreadable_training_items_flag_a_result_whose_evaluation_items_all_scored(tmp_path) -> None:
    result = _result()
    result.coverage = Coverage(40, 40, "val images", training_skipped=3)
    write_result(result, tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["coverage"]["partial"] is True
    assert "40 of 40 items (val images); 3 training items missing or unreadable" in (tmp_path / "result.md").read_text()
    assert read_result(tmp_path).coverage == result.coverage
    data = json.loads((tmp_path / "result.json").read_text())
    del data["coverage"]["training_skipped"]  # a result written before the field existed
    (tmp_path / "result.json").write_text(json.dumps(data))
    assert read_result(tmp_path).coverage == Coverage(40, 40, "val images") and not Coverage(40, 40).partial


def test_read_result_names_a_missing_or_foreign_file(tmp_path) -> None:
    with pytest.raises(VitoError, match="no evaluation result"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text('{"top1": 0.5}')
    with pytest.raises(VitoError, match="not a vito result"):
        read_result(tmp_path)


def test_encoder_spec_holds_the_random_init_rule(tmp_path) -> None:
    with pytest.raises(VitoError, match="needs --weights FILE \\(or --random-init"):
        EncoderSpec("timm:resnet18").check()
    with pytest.raises(VitoError, match="--random-init is for"):
        EncoderSpec("timm:resnet18", weights=tmp_path / "w.pt", random_init=True).check()
    with pytest.raises(VitoError, match="precision"):
        EncoderSpec("timm:resnet18", random_init=True, precision="fp8").check()
    spec = EncoderSpec("timm:resnet18", random_init=True, device="cpu", precision="fp32")
    encoder = spec.load()
    assert encoder.precision == "fp32"
    assert spec.identity() == encoder.fingerprint == load_encoder("timm:resnet18").fingerprint
