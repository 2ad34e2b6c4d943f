"""The loop without a per-step host sync: the loss is read at log and checkpoint steps only, a non-finite
loss still stops the run within train.log_every steps, no checkpoint ever holds non-finite weights, and the
time spent waiting for the loader is logged."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import tiny_config
from vito.engine import distributed
from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.models.vito import Vito
from vito.pretrain.loop import pretrain


def _all_finite(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_reads_the_loss_only_at_log_and_checkpoint_steps_and_logs_input_wait(videos, tmp_path, monkeypatch):
    syncs = []
    mean = distributed.mean_over_processes
    monkeypatch.setattr(distributed, "mean_over_processes", lambda values: syncs.append(1) or mean(values))
    result = pretrain(tiny_config("train.max_steps=6", "train.log_every=3", "train.checkpoint_every=6"), videos,
                      tmp_path)
    assert result.step == 6 and len(syncs) == 2  # steps 3 and 6, not every step
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    for record in records:
        assert 0 <= record["data_wait_share"] <= 1 and 0 <= record["data_wait_s"] <= record["step_s"]
    assert load_checkpoint(tmp_path)["data_path_version"] == "cpu-opencv/3"


def _poison(monkeypatch, where: str, call: int) -> None:
    """A NaN in the loss of step ``call`` (``where="loss"``), or in a target weight after it ("weights")."""
    forward, update = Vito.forward, Vito.update_target
    calls = {"forward": 0, "update": 0}

    def poisoned_forward(self, views, **kwargs):
        out = forward(self, views, **kwargs)
        calls["forward"] += 1
        if where == "loss" and calls["forward"] == call:
            out["loss"] = out["loss"] * float("nan")
        return out

    def poisoned_update(self, tau):
        update(self, tau)
        calls["update"] += 1
        if where == "weights" and calls["update"] == call:
            with torch.no_grad():
                next(p for n, p in self.named_parameters() if "target" in n).fill_(float("nan"))

    monkeypatch.setattr(Vito, "forward", poisoned_forward)
    monkeypatch.setattr(Vito, "update_target", poisoned_update)


def test_nan_loss_stops_within_log_every_steps_naming_the_last_good_checkpoint(videos, tmp_path, monkeypatch):
    _poison(monkeypatch, "loss", call=3)  # after the checkpoint of step 2; the next read is at step 4
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=f"loss became nan at step 3.*last good checkpoint is {last}"):
        pretrain(tiny_config("train.max_steps=12", "train.log_every=4", "train.checkpoint_every=2"), videos, tmp_path)
    files = sorted((tmp_path / "checkpoints").glob("*.pt"))
    assert load_checkpoint(tmp_path)["step"] == 2 and files and all(_all_finite(f) for f in files)
    assert "loss became nan at step 3" in (tmp_path / "train.log").read_text()


def test_no_checkpoint_from_non_finite_weights(videos, tmp_path, monkeypatch):
    _poison(monkeypatch, "weights", call=4)  # the loss of step 4 is still finite; its weights are not
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=f"weights became non-finite by step 4.*last good checkpoint is {last}"):
        pretrain(tiny_config("train.max_steps=6", "train.log_every=4", "train.checkpoint_every=2"), videos, tmp_path)
    files = sorted((tmp_path / "checkpoints").glob("*.pt"))
    assert load_checkpoint(tmp_path)["step"] == 2 and files and all(_all_finite(f) for f in files)
