"""Metrics loggers: W&B (offline mode) and MLflow (a file store) follow a pretraining run through a SIGTERM and a
resume as ONE run, with strictly increasing steps; a logger whose extra is missing is a one-line error."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_config
from tests.pretrain.test_loop import _interrupt_during_step
from vito.engine import loggers
from vito.engine.loggers import IDS_FILE
from vito.errors import VitoError
from vito.pretrain.loop import pretrain

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")


def _records(file: Path) -> list[bytes]:
    """The records of a W&B transaction log (``.wandb``): a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log blocks of 32 KiB whose records are checksum (4 bytes), length (2, little-endian), type (1: full,
    2: first, 3: middle, 4: last), data."""
    raw, block, records, pending, at = file.read_bytes(), 32768, [], b"", 7
    assert raw[:4] == b":W&B", file
    while at + 7 <= len(raw):
        if block - at % block < 7:  # a block's tail too short for a header is padding
            at += block - at % block
            continue
        length, kind = struct.unpack("<HB", raw[at + 4:at + 7])
        pending += raw[at + 7:at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
        elif kind == 0:
            break
    return records


def _wandb_steps(wandb_dir: Path, run_id: str) -> list[int]:
    """The steps of the history records in the offline run files of ``run_id``, in the order they were written."""
    from wandb.proto import wandb_internal_pb2

    steps = []
    for file in sorted(wandb_dir.rglob(f"run-{run_id}.wandb")):  # one folder per start, named by its start time
        for data in _records(file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                steps.append(record.history.step.num)
    return steps


def test_wandb_and_mlflow_continue_the_same_run_after_sigterm(videos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x: the file store only when asked for
    (tmp_path / "wandb").mkdir()
    config = tiny_config("train.max_steps=4", "train.checkpoint_every=100", "train.log_every=1",
                         "train.loggers=[tensorboard,wandb,mlflow]")
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_during_step(patch, step=2)
        stopped = pretrain(config, videos, run)
    assert (stopped.step, stopped.stopped_by) == (2, "SIGTERM")
    ids = json.loads((run / IDS_FILE).read_text())
    resumed = pretrain(config, None, run, resume=True)
    assert resumed.step == 4
    assert json.loads((run / IDS_FILE).read_text()) == ids  # the same W&B and MLflow runs continue

    assert _wandb_steps(tmp_path / "wandb", ids["wandb"]) == [1, 2, 3, 4]
    assert len(list((tmp_path / "wandb").rglob("run-*.wandb"))) == 2  # two starts, one run id
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    history = client.get_metric_history(ids["mlflow"], "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in logged])
    assert len(client.search_runs([client.get_run(ids["mlflow"]).info.experiment_id])) == 1


def test_a_logger_whose_extra_is_missing_is_one_line_before_the_run_folder(videos: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(VitoError) as error:
        pretrain(tiny_config("train.max_steps=1", "train.loggers=[mlflow]"), videos, tmp_path / "run")
    assert str(error.value) == ("logger 'mlflow' needs the optional package mlflow, which is not installed: "
                                "pip install 'vito[mlflow]'")
    assert not (tmp_path / "run").exists()


def test_unknown_logger_names_are_refused() -> None:
    with pytest.raises(VitoError, match=r"loggers: unknown logger\(s\) 'neptune'; choose from tensorboard, wandb"):
        loggers.open_sinks(Path("unused"), ["neptune"])
    with pytest.raises(VitoError, match=r"train\.loggers\[0\]: 'neptune' is not one of"):
        tiny_config("train.loggers=[neptune]")


def test_the_fine_tune_loop_continues_its_mlflow_run_after_sigterm(tmp_path: Path, monkeypatch) -> None:
    from tests.engine.test_finetune import CPU, _batches, _job
    from vito.engine.finetune import FinetuneSpec, finetune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    spec = FinetuneSpec(format="vito-test/1", iterations=6, config={"lr": 0.1}, checkpoint_every=4, log_every=1,
                        loggers=("mlflow",))
    for stop_at, resume in [(2, False), (None, True)]:
        model, optimizer, loss_fn, _ = _job(stop_at)
        result = finetune(model, loss_fn, optimizer, lambda s: 0.1, _batches, tmp_path / "run", spec, CPU,
                          resume=resume)
        assert result.step == (2 if stop_at else 6)
    run_id = json.loads((tmp_path / "run" / IDS_FILE).read_text())["mlflow"]
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


@pytest.mark.parametrize("settings, required", [("segment", "--dataset voc --root R"),
                                                ("detect", "--dataset coco --val-ann V"),
                                                ("ucf101", "--root R --splits S")])
def test_every_fine_tuning_evaluation_takes_the_one_loggers_option(settings: str, required: str) -> None:
    import argparse

    from vito.engine.loggers import LoggerSettings
    from vito.eval.core.running import NON_RESULT_SETTINGS
    from vito.eval.dense.detection.settings import DetectSettings
    from vito.eval.dense.segmentation.segment import SegmentSettings
    from vito.eval.video.ucf101 import UCF101Settings
    from vito.schema import add_arguments

    cls = {"segment": SegmentSettings, "detect": DetectSettings, "ucf101": UCF101Settings}[settings]
    assert issubclass(cls, LoggerSettings) and "loggers" in NON_RESULT_SETTINGS  # where to, never what
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    assert parser.parse_args(required.split()).loggers == ["tensorboard"]
    assert parser.parse_args([*required.split(), "--loggers", "wandb", "mlflow"]).loggers == ["wandb", "mlflow"]
    with pytest.raises(SystemExit):
        parser.parse_args([*required.split(), "--loggers", "neptune"])


def test_vito_report_loggers_reach_the_fine_tuning_cells_only(tmp_path: Path) -> None:
    from vito.report.grid import Cell, _prepare

    segment = Cell("reference", "segment", tmp_path / "a", None, {"dataset": "voc", "root": str(tmp_path)})
    knn = Cell("reference", "knn", tmp_path / "b", None, {"train": str(tmp_path), "val": str(tmp_path)})
    for cell in (segment, knn):
        assert _prepare(cell, None, {}, dry_run=True, loggers=["mlflow"]), cell.error
    assert segment.settings.loggers == ["mlflow"] and not hasattr(knn.settings, "loggers")
    assert _prepare(segment, None, {}, dry_run=True) and segment.settings.loggers == ["tensorboard"]
