"""The UCF-101 fine-tune on the shared loop: a stopped run resumes as if never stopped, a finished one is reused,
a non-finite loss stops it with one line, batches are a function of the step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.eval.video.ucf101_toy import two_classes
from tests.helpers import tensors_equal
from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.eval.video import ucf101_recipe
from vito.eval.video.ucf101_data import (
    TrainingClips,
    UCF101Clips,
    VideoEntry,
)


def test_a_stopped_fine_tune_resumes_as_if_never_stopped_and_a_finished_one_is_reused(tmp_path, shared_data,
                                                                                     monkeypatch) -> None:
    """A stop request during step 2 (as SLURM's SIGTERM): the step and a checkpoint are finished, the command
    exits 143, and --resume ends with the weights, optimizer and RNG states and the scores of a run never stopped.
    A rerun into a finished OUT trains nothing."""
    from vito.cli import main

    args, whole, stopped = two_classes(tmp_path, shared_data), tmp_path / "whole", tmp_path / "stopped"
    assert main([*args, "--out", str(whole)]) == 0
    loss, calls = ucf101_recipe.clip_loss, []

    def stop_in_step_2(model, batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(model, batch)

    monkeypatch.setattr(ucf101_recipe, "clip_loss", stop_in_step_2)
    assert main([*args, "--out", str(stopped)]) == 143
    assert load_checkpoint(stopped / "runs" / "split1", expected_format="vito-ucf101/1")["step"] == 2
    assert not (stopped / "result.json").exists()
    monkeypatch.setattr(ucf101_recipe, "clip_loss", loss)
    assert main([*args, "--out", str(stopped), "--resume"]) == 0

    final = [torch.load(out / "runs" / "split1" / "checkpoints" / "last.pt", weights_only=True) for out in (whole,
                                                                                                             stopped)]
    assert final[0]["step"] == final[1]["step"] == 3
    for part in ("model", "optimizer", "rng"):
        tensors_equal(final[0][part], final[1][part], part)
    results = [json.loads((out / "result.json").read_text()) for out in (whole, stopped)]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["tables"]["loss history"] == results[1]["tables"]["loss history"] and \
        [row["epoch"] for row in results[0]["tables"]["loss history"]] == [1, 2, 3]

    monkeypatch.setattr(ucf101_recipe, "clip_loss", lambda *a: pytest.fail("a finished fine-tune is trained again"))
    assert main([*args, "--out", str(whole)]) == 0
    assert json.loads((whole / "result.json").read_text())["metrics"] == results[0]["metrics"]


def test_a_non_finite_loss_stops_the_fine_tune_with_one_line(tmp_path, shared_data, monkeypatch, capsys) -> None:
    from vito.cli import main

    loss = ucf101_recipe.clip_loss
    monkeypatch.setattr(ucf101_recipe, "clip_loss", lambda model, batch: {"loss": loss(model, batch)["loss"] * np.nan})
    assert main([*two_classes(tmp_path, shared_data), "--out", str(tmp_path / "out")]) == 2
    assert "the loss became nan at step 1: training stopped and no checkpoint was written yet. Lower the learning " \
           "rate" in capsys.readouterr().err
    assert not (tmp_path / "out" / "result.json").exists()


def test_training_batches_split_over_processes_and_resume_at_any_step(shared_data) -> None:
    videos = UCF101Clips(shared_data / "ucf101" / "clips", [VideoEntry("test.avi", 0), VideoEntry("missing.avi", 1),
                                                            VideoEntry("test.avi", 2)], train=True, image_size=16)
    whole = TrainingClips(videos, batch_size=2, seed=3, start_step=0)
    first, second = whole.batch(0), whole.batch(1)
    halves = [TrainingClips(videos, 2, seed=3, start_step=1, rank=rank, world_size=2).batch(1) for rank in (0, 1)]
    assert torch.equal(torch.cat([h["clips"] for h in halves]), second["clips"])
    assert torch.equal(torch.cat([h["labels"] for h in halves]), second["labels"])
    assert next(iter(TrainingClips(videos, 2, seed=3, start_step=1)))["step"] == 1
    skipped = first["skipped"] + second["skipped"]  # the missing video is replaced, and listed once
    assert 1 not in first["labels"].tolist() + second["labels"].tolist()
    assert [Path(path).name for path, _ in skipped] == ["missing.avi"]
    with pytest.raises(VitoError, match="does not split over 3 processes"):
        TrainingClips(videos, 2, seed=3, start_step=0, world_size=3)
