"""The UCF-101 fine-tune on the shared loop: a stopped run resumes as if never stopped, a finished one is reused,
a non-finite loss stops it with one line, batches are a function of the step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import pytest
import torch

from tests.eval.video.ucf101_toy import two_classes
from tests.helpers import tensors_equal
from vito.engine import distributed
from vito.engine.checkpoint import load_checkpoint, seed_all
from vito.engine.finetune import FinetuneStopped
from vito.errors import VitoError
from vito.eval.core.registry import settings_from_mapping
from vito.eval.video import ucf101_recipe
from vito.eval.video.temporal_heads import VideoClassifier
from vito.eval.video.ucf101 import UCF101, UCF101Settings
from vito.eval.video.ucf101_data import (
    TrainingClips,
    UCF101Clips,
    VideoEntry,
)

CPU = distributed.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


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


# --------------------------------------------------------------------------------------------------
# The recipes: CycleContrast's (default) and vito-v1


def _settings(tmp_path: Path, **values) -> UCF101Settings:
    return settings_from_mapping(UCF101, {"root": tmp_path, "splits": tmp_path, **values})


def test_the_recipes_values_overrides_and_checks(tmp_path) -> None:
    cycle = ucf101_recipe.resolve_recipe(_settings(tmp_path))
    assert (cycle.name, cycle.train_clips, cycle.batch_size, cycle.lr_drop, cycle.dropout, cycle.warmup_epochs) == \
        ("cyclecontrast", 5, 32, 0.3, 0.9, 5)
    assert cycle.color_jitter == (0.4, 0.4, 0.4, 0.2) and "drop09.yaml" in cycle.source
    old = ucf101_recipe.resolve_recipe(_settings(tmp_path, recipe="vito-v1"))
    assert (old.train_clips, old.batch_size, old.lr_drop, old.color_jitter, old.dropout, old.warmup_epochs) == \
        (1, 8, 0.1, None, 0.0, 0)
    avid = ucf101_recipe.resolve_recipe(_settings(tmp_path, dropout=0.5, batch_size=16))
    assert (avid.dropout, avid.batch_size, avid.train_clips) == (0.5, 16, 5)
    assert ucf101_recipe.resolve_recipe(_settings(tmp_path, mode="frozen")).warmup_epochs == 0
    for values, message in (({"mode": "frozen", "warmup_epochs": 2}, "--mode frozen trains it alone"),
                            ({"dropout": 1.0}, r"--dropout must be in \[0, 1\)"),
                            ({"train_clips": 0}, "--train-clips must be at least 1")):
        with pytest.raises(VitoError, match=message):
            UCF101().check(_settings(tmp_path, **values), has_encoder=True)
    # lr x0.3 after epochs 6, 10, 14 of 5 steps each (10 samples, batch 2)
    schedule = ucf101_recipe.Schedule.of(samples=10, batch=2, epochs=16, lr=1e-4, lr_drop=0.3)
    assert (schedule.steps, schedule.drops) == (80, (30, 50, 70))
    assert [schedule.lr_at(s) for s in (29, 30, 50, 79)] == pytest.approx([1e-4, 3e-5, 9e-6, 2.7e-6])


def test_the_recipe_is_part_of_the_cell_and_of_the_run_identity(tmp_path) -> None:
    """`vito report` recomputes a cell made with vito-v1 or before the recipes; a vito-v1 fine-tune keeps the run
    identity it had before them (its folder is reused), a CycleContrast one adds the values that differ."""
    from vito.eval.core.registry import settings_dict
    from vito.report.grid import Cell, matches

    current = _settings(tmp_path)
    before = {k: v for k, v in settings_dict(_settings(tmp_path, recipe="vito-v1")).items() if k != "recipe"}
    cell = Cell("row", "ucf101", tmp_path, SimpleNamespace(), {}, settings=current)  # a row with an encoder
    assert not matches({**before, "recipe": "vito-v1"}, cell, None)
    assert not matches(before, cell, None)
    encoder = SimpleNamespace(fingerprint="f", name="n")
    keys = set(ucf101_recipe.run_config(encoder, _settings(tmp_path, recipe="vito-v1"),
                                        ucf101_recipe.RECIPES["vito-v1"], 1, 2, 2))
    assert keys == {"evaluation", "root", "splits", "split", "videos", "num_classes", "encoder", "encoder_name",
                    "pooling", "mode", "epochs", "lr", "milestones", "batch_size", "image_size", "clip_seconds",
                    "fps", "max_videos", "seed"}
    cycle = ucf101_recipe.run_config(encoder, current, ucf101_recipe.RECIPES["cyclecontrast"], 1, 2, 2)
    assert set(cycle) - keys == {"train_clips", "lr_drop", "color_jitter", "dropout", "warmup_epochs"}


class _RandomClips(UCF101Clips):
    """Two training videos whose clips are random 4-frame 16-px tensors, a function of (video, draw)."""

    def read(self, index: int, draw: int) -> torch.Tensor:
        return torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(100 * draw + index))


def _warmup_then_finetune(tmp_path: Path, out: str, stop_at: int | None = None, resume: bool = False):
    """CycleContrast's two phases, small: 2 videos x 2 clips at batch 2 (2 steps an epoch), 1 warm-up epoch, 2
    epochs; optionally stopped (SIGTERM) in the `stop_at`-th step of this call."""
    from vito.eval.core.encoders import load_encoder

    settings = _settings(tmp_path, epochs=2, batch_size=2, train_clips=2, warmup_epochs=1, num_workers=0,
                         checkpoint_every=100, resume=resume)
    recipe = ucf101_recipe.resolve_recipe(settings)
    seed_all(0)
    model = VideoClassifier(load_encoder("timm:resnet10t"), "avg", 2, dropout=recipe.dropout)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    videos = _RandomClips(tmp_path, [VideoEntry("a.avi", 0), VideoEntry("b.avi", 1)], train=True)
    calls, loss = [], ucf101_recipe.clip_loss

    def counted(net, batch):
        calls.append(1)
        if len(calls) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(net, batch)

    config = {"split": 1, "recipe": "test"}
    with patch.object(ucf101_recipe, "clip_loss", counted):
        trained = ucf101_recipe.finetune_classifier(model, videos, settings, recipe, tmp_path / out / "split1", config,
                                                    "fp32", CPU)
    return trained, initial, model


def test_the_classifier_warms_up_alone_then_everything_fine_tunes_and_resumes_exactly(tmp_path) -> None:
    trained, initial, model = _warmup_then_finetune(tmp_path, "whole")
    assert [(p.name, p.run_dir.name, p.schedule.steps) for p in trained.phases] == \
        [("classifier warm-up", "split1_warmup", 2), ("fine-tune", "split1", 4)]
    warm = torch.load(tmp_path / "whole" / "split1_warmup" / "checkpoints" / "last.pt", weights_only=True)["model"]
    backbone = [k for k in initial if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(warm[k], initial[k]) for k in backbone)  # the warm-up leaves the backbone's weights
    assert not torch.equal(warm["fc.weight"], initial["fc.weight"])  # and trains the classifier
    bn = next(k for k in initial if k.endswith("running_mean"))
    assert not torch.equal(warm[bn], initial[bn])  # its batch norms follow the batches (train mode), as AVID-CMA's
    assert not all(torch.equal(model.state_dict()[k], initial[k]) for k in backbone)  # then everything learns
    rows = ucf101_recipe.epoch_history(trained.phases)
    assert [(r["phase"], r["epoch"]) for r in rows] == [("classifier warm-up", 1), ("fine-tune", 1), ("fine-tune", 2)]
    assert [r["lr"] for r in rows] == pytest.approx([1e-4, 1e-4, 1e-4])  # no milestone within 2 epochs

    # stopped in the fine-tune's second step (after the 2 warm-up steps); the rerun reuses the finished warm-up
    with pytest.raises(FinetuneStopped):
        _warmup_then_finetune(tmp_path, "stopped", stop_at=4)
    _warmup_then_finetune(tmp_path, "stopped", resume=True)
    for name in ("split1_warmup", "split1"):
        final = [torch.load(tmp_path / run / name / "checkpoints" / "last.pt", weights_only=True)
                 for run in ("whole", "stopped")]
        for part in ("model", "optimizer", "rng"):
            tensors_equal(final[0][part], final[1][part], f"{name} {part}")
