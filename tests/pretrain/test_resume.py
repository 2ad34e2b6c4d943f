"""Resuming a pretraining run: what may change, and which folder or checkpoint file ``--resume`` names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import tensors_equal, tiny_config
from vito.config import ConfigError, load_config
from vito.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from vito.errors import VitoError
from vito.pretrain.loop import pretrain
from vito.pretrain.resume import resume_config, resume_target


def _state(step: int) -> dict:
    return {"format": FORMAT, "step": step, "model": torch.nn.Linear(3, 2).state_dict()}


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


def test_resume_target_accepts_a_run_folder_or_one_of_its_step_files(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config("demo").to_dict()))
    save_checkpoint(tmp_path, _state(2))
    assert resume_target(tmp_path) == (tmp_path, None)
    step = tmp_path / "checkpoints" / "step_0000002.pt"
    assert resume_target(step) == (tmp_path, step)
    torch.save(_state(2), tmp_path / "loose.pt")
    with pytest.raises(VitoError, match="must lie in RUN/checkpoints/"):
        resume_target(tmp_path / "loose.pt")


def test_a_config_given_on_resume_must_be_the_runs(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config("demo").to_dict()))
    assert resume_config(tmp_path, ["train.max_steps=999"], config="demo").train.max_steps == 999
    with pytest.raises(ConfigError, match=r"--config vito_r50 is not the config of the run in .*: data\.batch_size"):
        resume_config(tmp_path, [], config="vito_r50")


def test_a_run_killed_before_its_first_checkpoint_starts_again_from_step_0(videos: Path, tmp_path: Path) -> None:
    """What SIGKILL before (or while) writing the first checkpoint leaves: config.yaml, logs, no checkpoint (an
    interrupted atomic write leaves a temporary file). Started again with the same arguments, or with --resume and
    its data, it runs from step 0 and ends as an uninterrupted run did; another config is still refused."""
    config = tiny_config("train.max_steps=2")
    straight = tmp_path / "straight"
    pretrain(config, videos, straight)
    killed = tmp_path / "killed"
    pretrain(config, videos, killed)
    shutil.rmtree(killed / "checkpoints")
    (killed / "checkpoints").mkdir()
    (killed / "checkpoints" / ".last.pt.1a2b.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(VitoError, match="already holds a run"):
        pretrain(tiny_config("train.max_steps=2", "optim.base_lr=0.5"), videos, killed)
    again = pretrain(config, videos, killed)  # the requeue script's "no last.pt yet" branch: same arguments
    assert again.step == 2 and "starts again from step 0" in (killed / "train.log").read_text()
    tensors_equal(load_checkpoint(straight)["model"], load_checkpoint(killed)["model"], "model")
    shutil.rmtree(killed / "checkpoints")
    with pytest.raises(VitoError, match="give it again"):
        pretrain(config, None, killed, resume=True)  # --resume RUN: the data is in no checkpoint yet
    assert pretrain(config, videos, killed, resume=True).step == 2
    tensors_equal(load_checkpoint(straight)["model"], load_checkpoint(killed)["model"], "model")
