"""The training loop: exact resume, clean stop on SIGTERM, a clear stop on a non-finite loss, run files."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_OVERRIDES, tensors_equal, tiny_config
from vito.config import ConfigError, load_config
from vito.engine.checkpoint import load_checkpoint
from vito.errors import DataError, VitoError
from vito.models.vito import Vito
from vito.pretrain.loop import pretrain
from vito.pretrain.optim import LARS


def _interrupt_during_step(monkeypatch, step: int) -> None:
    """Send this process SIGTERM while step ``step`` (1-based) updates the weights, late in the step."""
    update = LARS.step
    calls = {"n": 0}

    def step_then_signal(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(LARS, "step", step_then_signal)


def test_resume_reproduces_an_uninterrupted_run_exactly(videos: Path, tmp_path: Path, monkeypatch) -> None:
    config = tiny_config("train.max_steps=4", "train.checkpoint_every=100")
    straight = pretrain(config, videos, tmp_path / "straight")
    with monkeypatch.context() as patch:
        _interrupt_during_step(patch, step=2)
        stopped = pretrain(config, videos, tmp_path / "split")
    assert (stopped.step, stopped.stopped_by) == (2, "SIGTERM")  # the step in flight, not one more
    resumed = pretrain(config, None, tmp_path / "split", resume=True)  # the data path comes from the checkpoint
    assert straight.step == resumed.step == 4 and resumed.stopped_by is None
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert any(k.startswith("target.") for k in a["model"]) and any(k.startswith("predictor.") for k in a["model"])
    tensors_equal(a["model"], b["model"], "model")
    tensors_equal(a["optimizer"], b["optimizer"], "optimizer")
    initial = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_0000002.pt")["model"]
    assert not torch.equal(initial["online.backbone.body.conv1.weight"], a["model"]["online.backbone.body.conv1.weight"])
    # metrics of the split run read like those of the straight run, one line per step
    lines = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert [r["loss"] for r in lines] == [r["loss"] for r in straight.history]


def test_run_folder_contents(videos: Path, tmp_path: Path) -> None:
    run = pretrain(tiny_config("train.max_steps=2"), videos, tmp_path)
    assert math.isfinite(run.last_loss) and run.skipped_videos == 0
    assert load_config(tmp_path / "config.yaml") == tiny_config("train.max_steps=2")
    assert "finished 2 steps" in (tmp_path / "train.log").read_text()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "lr", "tau", "clips_per_s", "skipped", "attention_entropy/stage1",
            "attention_entropy/stage2"} <= record.keys()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    state = load_checkpoint(tmp_path)
    assert state["step"] == 2 and state["world_size"] == 1 and state["data_path"] == str(videos)


def test_non_finite_loss_stops_and_names_the_last_good_checkpoint(videos, tmp_path, monkeypatch) -> None:
    forward = Vito.forward
    calls = {"n": 0}

    def poisoned(self, views, **kwargs):
        out = forward(self, views, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step goes wrong, after the checkpoint of step 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(Vito, "forward", poisoned)
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=f"loss became nan at step 3.*last good checkpoint is {last}"):
        pretrain(tiny_config("train.max_steps=5"), videos, tmp_path)
    assert load_checkpoint(tmp_path)["step"] == 2  # not overwritten
    assert f"ERROR the loss became nan at step 3: training stopped and the last good checkpoint is {last}" in \
        (tmp_path / "train.log").read_text()  # the terminal of a batch job may be gone


def test_indivisible_batch_is_a_user_error(videos, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    from vito.pretrain.loop import _per_rank_batch

    with pytest.raises(VitoError, match="not divisible"):
        _per_rank_batch(4, 3)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_checks_its_inputs_and_survives_a_damaged_last_checkpoint(videos: Path, tmp_path: Path, monkeypatch,
                                                                           capsys) -> None:
    from vito.cli import main

    run = tmp_path / "run"
    monkeypatch.chdir(videos.parent)
    assert main(["pretrain", "--config", "demo", "--data", videos.name, "--out", str(run), "--max-steps", "4",
                 *TINY_OVERRIDES]) == 0
    assert load_checkpoint(run)["data_path"] == str(videos)  # absolute: resumes work from anywhere
    monkeypatch.chdir(tmp_path)
    before = _snapshot(run)
    refusals = [
        ([], "checkpoints/last.pt is at step 4 already: train.max_steps=4 leaves nothing to do"),
        (["--data", str(tmp_path), "--max-steps", "6"],
         f"--data {tmp_path} is not the data of this run \\({videos}\\)"),
        (["--config", "vito_r50", "--max-steps", "6"], "--config vito_r50 is not the config of the run"),
    ]
    for extra, message in refusals:
        assert main(["pretrain", "--resume", str(run), *extra]) == 2
        assert re.search(message, capsys.readouterr().err), message
    assert _snapshot(run) == before  # refused before anything was written

    os.truncate(run / "checkpoints" / "last.pt", 100)  # damages step_0000004.pt too: its hard link
    (run / "checkpoints" / ".last.pt.k2j3.tmp").write_bytes(b"half a checkpoint")  # a save killed hard
    assert main(["pretrain", "--resume", str(run), "--max-steps", "5"]) == 0
    log = (run / "train.log").read_text()
    assert f"resuming from {run / 'checkpoints' / 'step_0000002.pt'} instead" in log
    assert "interrupted write" in log and not list(run.glob("checkpoints/*.tmp"))
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert "on resume train.max_steps changes from 4 to 5" in log

    # a step file of the run: continue from there (here: redo step 5 from step 4's rewritten copy)
    assert main(["pretrain", "--resume", str(run / "checkpoints" / "step_0000004.pt"), "--max-steps", "5"]) == 0
    assert load_checkpoint(run)["step"] == 5
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_a_backbone_that_cannot_run_at_the_image_size_is_named_at_start(videos: Path, tmp_path: Path) -> None:
    config = tiny_config("model.backbone=vit_tiny_patch16_224", "data.image_size=64", "data.decode_short_side=64")
    with pytest.raises(ConfigError, match=r"data\.image_size=64: model\.backbone='vit_tiny_patch16_224' cannot run"):
        pretrain(config, videos, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_workers_are_capped_at_the_cpus_of_the_process(monkeypatch) -> None:
    from vito.engine.distributed import worker_count
    from vito.engine.finetune import make_loader

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [worker_count(n) for n in (0, 1, 4, 8)] == [0, 1, 4, 4]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes on this host share the CPUs
    assert worker_count(4) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert worker_count(4) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # the fine-tunes' loaders are capped too
    batches = make_loader(_Steps(), num_workers=4)
    assert batches._num_workers == 1 and next(batches) == 0
    del batches


class _Steps(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from range(3)


def test_a_full_disk_while_logging_stops_with_a_message_naming_the_file_and_checkpoint(videos: Path, tmp_path: Path,
                                                                                       monkeypatch) -> None:
    import vito.engine.run_files as run_files

    def no_space_for_metrics(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(run_files, "open", no_space_for_metrics, raising=False)
    run = tmp_path / "run"
    config = tiny_config("train.max_steps=4", "train.log_every=2", "train.checkpoint_every=1")
    with pytest.raises(VitoError, match=re.escape(f"could not write {run / 'metrics.jsonl'} at step 2: No space left "
                                                  f"on device; training stopped and the last good checkpoint is "
                                                  f"{run / 'checkpoints' / 'last.pt'} (left untouched)")):
        pretrain(config, videos, run)
    assert load_checkpoint(run)["step"] == 1
    assert "No space left on device" in (run / "train.log").read_text()

    monkeypatch.setattr(run_files, "_write_run_files", lambda *a: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "other" / "config.yaml"))))
    with pytest.raises(VitoError, match="could not write the run's files in .*other: Read-only file system"):
        pretrain(config, videos, tmp_path / "other")


def test_a_run_from_before_mask_same_video_resumes_as_it_trained(videos: Path, tmp_path: Path) -> None:
    """Runs older than loss.mask_same_video lack the key in config.yaml and in their checkpoints: they trained
    with same-video clips as negatives, and a resume continues so (it was refused as a config change)."""
    import yaml

    from vito.pretrain.resume import resume_config

    run = tmp_path / "run"
    pretrain(tiny_config("train.max_steps=2"), videos, run)
    config_file = run / "config.yaml"
    saved = yaml.safe_load(config_file.read_text())
    del saved["loss"]["mask_same_video"]
    config_file.write_text(yaml.safe_dump(saved))
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["loss"]["mask_same_video"]
    torch.save(state, last)

    config = resume_config(run, ["train.max_steps=3"])
    assert config.loss.mask_same_video is False
    result = pretrain(config, None, run, resume=True)
    assert result.step == 3
    assert "the checkpoint predates loss.mask_same_video: the run continues as it trained, " \
           "loss.mask_same_video=False" in (run / "train.log").read_text()
    with pytest.raises(ConfigError, match=r"loss\.mask_same_video cannot change when resuming \(False -> True\)"):
        resume_config(run, ["loss.mask_same_video=true"])


def test_a_cut_off_last_metrics_line_does_not_stop_a_resume(videos: Path, tmp_path: Path) -> None:
    pretrain(tiny_config("train.max_steps=2"), videos, tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "loss": 4.1')  # a full disk during the append leaves this
    resumed = pretrain(tiny_config("train.max_steps=3"), None, tmp_path, resume=True)
    assert resumed.step == 3
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "dropped 1 line(s) that are not a whole record" in (tmp_path / "train.log").read_text()


def test_too_few_videos_for_negatives_is_refused_before_the_run_folder_is_touched(videos: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(videos.rglob("*.mp4"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    with pytest.raises(DataError, match=r"1 usable video\(s\).*at least 2 are needed") as error:
        pretrain(tiny_config(), one, tmp_path / "new")
    assert "smaller batch" not in str(error.value) and not (tmp_path / "new").exists()
    previous = tmp_path / "previous"  # --overwrite into another run: its files stay when the new run cannot start
    (previous / "checkpoints").mkdir(parents=True)
    (previous / "checkpoints" / "last.pt").write_bytes(b"the previous run's weights")
    (previous / "config.yaml").write_text("the previous run's config\n")
    with pytest.raises(DataError, match="at least 2 are needed"):
        pretrain(tiny_config(), one, previous, overwrite=True)
    assert (previous / "checkpoints" / "last.pt").read_bytes() == b"the previous run's weights"


def test_a_step_longer_than_the_grace_period_is_announced_at_start_without_changing_the_run(videos: Path,
                                                                                            tmp_path: Path) -> None:
    warned = pretrain(tiny_config("train.max_steps=2", "train.stop_grace_seconds=1e-9"), videos, tmp_path / "warned")
    quiet = pretrain(tiny_config("train.max_steps=2", "train.stop_grace_seconds=0"), videos, tmp_path / "quiet")
    log = (tmp_path / "warned" / "train.log").read_text()
    assert re.search(r"one training step takes about \d+ s here \(a timed step of 2 clip\(s\), scaled to \d+\).*"
                     r"train\.stop_grace_seconds=1e-09", log)
    assert "one training step takes" not in (tmp_path / "quiet" / "train.log").read_text()
    tensors_equal(load_checkpoint(warned.run_dir)["model"], load_checkpoint(quiet.run_dir)["model"], "model")
