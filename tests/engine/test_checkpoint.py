"""Checkpoints: safe loading, exact RNG round trip, atomic replacement, and a run folder's newest intact one."""

from __future__ import annotations

import errno
import logging
import os
import random

import numpy as np
import pytest
import torch

import vito.io
from vito.config import load_config
from vito.engine.checkpoint import (
    FORMAT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vito.errors import VitoError


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


# --------------------------------------------------------------------------------------------------
# Damaged files, full disks, old copies (issue 10, items 5, 6 and 10)


def test_a_corrupt_or_empty_last_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, _state(step))
    last = tmp_path / "checkpoints" / "last.pt"
    for damage in (lambda: os.truncate(last, 0), lambda: os.truncate(last, last.stat().st_size // 2)):
        damage()  # in place: step_0000003.pt, its hard link, is damaged too
        with caplog.at_level(logging.WARNING, logger="vito.engine.checkpoint"):
            state = load_checkpoint(tmp_path)
        assert state["step"] == 2 and state["path"] == str(tmp_path / "checkpoints" / "step_0000002.pt")
        assert len(state["fallback"]) == 2 and "newest intact checkpoint" in caplog.text
        save_checkpoint(tmp_path, _state(3))
        caplog.clear()
    with pytest.raises(VitoError, match="is empty"):
        os.truncate(last, 0)
        load_checkpoint(last)  # a file named explicitly is read as it is
    for path in (tmp_path / "checkpoints").iterdir():
        os.truncate(path, 0)
    with pytest.raises(VitoError, match="no intact checkpoint in"):
        load_checkpoint(tmp_path)


def test_a_full_disk_names_the_last_good_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    save_checkpoint(tmp_path, _state(1))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vito.io.os, "fsync", no_space)
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=f"checkpoint of step 2 to {last}: No space left on device; "
                                        f"the last good checkpoint is {last} \\(left untouched\\)"):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "step_0000001.pt"]
    assert load_checkpoint(tmp_path)["step"] == 1


def test_a_disk_that_fills_inside_torch_save_is_the_same_clear_error(tmp_path, monkeypatch) -> None:
    """A real full disk fails in torch.save's own writes, which torch turns into a RuntimeError."""
    save_checkpoint(tmp_path, _state(1))
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data) -> int:
            self.writes += 1
            if self.writes > 2:  # the disk fills after torch.save's first records
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

    monkeypatch.setattr(vito.io.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=f"checkpoint of step 2 to {last}: No space left on device; "):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "step_0000001.pt"]
    assert load_checkpoint(tmp_path)["step"] == 1


def test_only_the_newest_step_copies_are_kept(tmp_path) -> None:
    save_checkpoint(tmp_path, _state(9))  # left by a continuation abandoned for a resume from step 4
    for step in (4, 5, 6, 7):
        save_checkpoint(tmp_path, _state(step), keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000006.pt", "step_0000007.pt", "step_0000009.pt"]
    assert load_checkpoint(tmp_path)["step"] == 7


