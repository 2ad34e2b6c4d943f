"""Checkpoints: safe loading, exact RNG round trip, atomic replacement, and what may change on resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml

from vito.config import ConfigError, load_config
from vito.errors import VitoError
from vito.train.checkpoint import (
    FORMAT,
    load_checkpoint,
    resume_config,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _state(step: int) -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {
        "format": FORMAT,
        "step": step,
        "config": load_config("demo").to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "data_path": "/some/videos",
        "world_size": 1,
    }


def test_round_trip_loads_with_weights_only(tmp_path) -> None:
    state = _state(step=5)
    path = save_checkpoint(tmp_path, state)
    assert path == tmp_path / "checkpoints" / "last.pt"
    assert (tmp_path / "checkpoints" / "step_0000005.pt").is_file()
    loaded = load_checkpoint(tmp_path)  # a run folder
    assert loaded["step"] == 5 and loaded["config"] == state["config"]
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert loaded["optimizer"]["state"][0]["momentum_buffer"].equal(state["optimizer"]["state"][0]["momentum_buffer"])
    assert load_checkpoint(path)["step"] == 5  # a file


def test_later_save_replaces_last_and_keeps_step_copies(tmp_path) -> None:
    save_checkpoint(tmp_path, _state(step=1))
    save_checkpoint(tmp_path, _state(step=2))
    assert load_checkpoint(tmp_path)["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoints" / "step_0000001.pt")["step"] == 1
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # no temporary files left behind


def test_rng_states_restore_exactly(tmp_path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path, _state(step=3))
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(load_checkpoint(tmp_path)["rng"])
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]


def test_missing_and_foreign_files_are_user_errors(tmp_path) -> None:
    with pytest.raises(VitoError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(VitoError, match="not a vito checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(VitoError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="format"):
        save_checkpoint(tmp_path, {"step": 1})


def test_resume_config_allows_only_safe_changes(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config("demo").to_dict()))
    assert resume_config(tmp_path, ["train.max_steps=999"]).train.max_steps == 999
    with pytest.raises(ConfigError, match=r"model\.backbone cannot change"):
        resume_config(tmp_path, ["model.backbone=resnet50"])
    with pytest.raises(ConfigError, match=r"data\.batch_size cannot change"):
        resume_config(tmp_path, ["data.batch_size=32"])
    with pytest.raises(ConfigError, match=r"model\.backbon"):
        resume_config(tmp_path, ["model.backbon=resnet50"])
    with pytest.raises(VitoError, match="not a vito run folder"):
        resume_config(tmp_path / "nowhere", [])
