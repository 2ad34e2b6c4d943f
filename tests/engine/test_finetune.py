"""The reusable fine-tune loop: reuse, refusal, stop + resume bit-identical, non-finite loss."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vito.engine import distributed
from vito.engine.checkpoint import load_checkpoint
from vito.engine.finetune import FinetuneSpec, finetune
from vito.errors import VitoError

CPU = distributed.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _batches(start: int):
    step = start
    while True:
        generator = torch.Generator().manual_seed(step)
        yield {"x": torch.randn(8, 4, generator=generator), "y": torch.randn(8, 1, generator=generator),
               "skipped": [("bad.jpg", "broken")] if step == 1 else []}
        step += 1


def _job(stop_at: int | None = None, scale: float = 1.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    calls = []

    def loss_fn(net, batch):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the loop finishes it, saves and stops
        return {"loss": scale * nn.functional.mse_loss(net(batch["x"]), batch["y"])}

    return model, optimizer, loss_fn, calls


def _spec(**config) -> FinetuneSpec:
    return FinetuneSpec(format="vito-test/1", iterations=6, config={"lr": 0.1, **config}, checkpoint_every=4,
                        log_every=1)


def _run(tmp: Path, stop_at=None, resume=False, overwrite=False, scale=1.0, **config):
    model, optimizer, loss_fn, calls = _job(stop_at, scale)
    result = finetune(model, loss_fn, optimizer, lambda s: 0.1 * (0.5 if s >= 3 else 1.0), _batches, tmp, _spec(**config),
                      CPU, resume=resume, overwrite=overwrite)
    return result, model, calls


def test_stop_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    whole, reference, _ = _run(tmp_path / "whole")
    assert whole.finished and whole.step == 6 and ("bad.jpg", "broken") in whole.skipped
    stopped, _, calls = _run(tmp_path / "stopped", stop_at=2)
    assert stopped.stopped_by == "SIGTERM" and stopped.step == 2 and not stopped.finished and len(calls) == 2
    assert load_checkpoint(tmp_path / "stopped", expected_format="vito-test/1")["step"] == 2
    with pytest.raises(VitoError, match="--resume"):
        _run(tmp_path / "stopped")  # a fresh start into the stopped run's folder is refused
    resumed, model, calls = _run(tmp_path / "stopped", resume=True)
    assert resumed.finished and len(calls) == 4
    assert resumed.skipped == [("bad.jpg", "broken")]  # met before the stop: kept in the checkpoint
    reused, _, calls = _run(tmp_path / "stopped")
    assert reused.reused and not calls and reused.skipped == [("bad.jpg", "broken")]  # a partial run stays partial
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and (tmp_path / "stopped" / "tb").is_dir()


def test_finished_run_is_reused_and_other_settings_are_refused(tmp_path: Path) -> None:
    _, trained, _ = _run(tmp_path)
    again, model, calls = _run(tmp_path)
    assert again.reused and calls == []
    for key, value in trained.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    with pytest.raises(VitoError, match=r"different settings \(lr\).*--overwrite"):
        _run(tmp_path, lr=0.2)
    replaced, _, calls = _run(tmp_path, overwrite=True, lr=0.2)
    assert not replaced.reused and len(calls) == 6
    assert load_checkpoint(tmp_path, expected_format="vito-test/1")["config"]["lr"] == 0.2


def test_non_finite_loss_names_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(VitoError, match="the loss became nan at step 1: training stopped and no checkpoint was written"):
        _run(tmp_path, scale=float("nan"))
    with pytest.raises(VitoError, match="--resume"):  # the failed run's folder is not taken silently
        _run(tmp_path)
    resumed, _, calls = _run(tmp_path, resume=True)  # nothing was checkpointed: it starts from step 0
    assert resumed.finished and len(calls) == 6


def test_a_loss_that_turns_non_finite_after_a_checkpoint_names_it_and_is_never_saved(tmp_path: Path) -> None:
    model, optimizer, _, _ = _job()

    def loss_fn(net, batch):  # finite for 4 steps (checkpoint at 4), then NaN from step 5 on
        loss = nn.functional.mse_loss(net(batch["x"]), batch["y"])
        return {"loss": loss if batch["step"] < 4 else loss * float("nan")}

    spec = FinetuneSpec(format="vito-test/1", iterations=6, config={"lr": 0.1}, checkpoint_every=4, log_every=3)
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=re.escape(f"the loss became nan at step 5: training stopped and the last good "
                                                  f"checkpoint is {last} (left untouched). Lower the learning rate")):
        finetune(model, loss_fn, optimizer, lambda s: 0.1, _numbered(_batches), tmp_path, spec, CPU)
    assert load_checkpoint(tmp_path, expected_format="vito-test/1")["step"] == 4  # step 6 (NaN weights) not saved


def test_a_full_disk_while_logging_stops_naming_the_file_and_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import vito.engine.run_files as run_files

    def no_space_for_metrics(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(run_files, "open", no_space_for_metrics, raising=False)
    model, optimizer, loss_fn, _ = _job()
    spec = FinetuneSpec(format="vito-test/1", iterations=6, config={"lr": 0.1}, checkpoint_every=1, log_every=2)
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(VitoError, match=re.escape(f"could not write {tmp_path / 'metrics.jsonl'} at step 2: No space "
                                                  f"left on device; training stopped and the last good checkpoint is "
                                                  f"{last} (left untouched)")):
        finetune(model, loss_fn, optimizer, lambda s: 0.1, _batches, tmp_path, spec, CPU)
    assert load_checkpoint(tmp_path, expected_format="vito-test/1")["step"] == 1


def _numbered(batches):
    """The test batches with their step number."""
    def numbered(start: int):
        for step, batch in enumerate(batches(start), start):
            yield {**batch, "step": step}
    return numbered


WORKER_FAILS = """
import sys
import torch
from torch.utils.data import IterableDataset
from vito.engine.finetune import make_loader


class FailsAfterOneBatch(IterableDataset):
    def __iter__(self):
        yield {"x": torch.zeros(1)}
        raise ValueError("bad data in a worker")


def main() -> int:
    batches = make_loader(FailsAfterOneBatch(), 2)
    try:
        for _ in batches:
            pass
    except ValueError:
        return 2  # what the CLI does with an error: print it and return
    return 0


sys.exit(main())
"""


def test_an_error_raised_in_a_worker_ends_the_process_instead_of_hanging_at_exit(tmp_path: Path) -> None:
    """Workers ignore SIGTERM; multiprocessing's exit handler stops leftover workers with SIGTERM and waits."""
    script = tmp_path / "fails.py"
    script.write_text(WORKER_FAILS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert "Exception ignored" not in done.stderr and "killed by signal" not in done.stderr, done.stderr


def test_a_cut_off_last_metrics_line_is_dropped_on_resume_and_said(tmp_path: Path, capsys) -> None:
    """What a full disk or a kill during the metrics append leaves: the resume goes on and says so."""
    _run(tmp_path, stop_at=2)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "lo')  # a write cut off mid-record
    resumed, _, _ = _run(tmp_path, resume=True)
    assert resumed.finished
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, 7))
    assert "dropped 1 line(s) that are not a whole record (line 3" in capsys.readouterr().err


def test_refusals_offer_what_a_fine_tune_command_can_do(tmp_path: Path) -> None:
    """`vito eval segment --resume` takes no folder, and `vito eval` has no --break-lock: the hints say so."""
    _run(tmp_path, stop_at=2)
    with pytest.raises(VitoError, match="continue it with the same command and --resume") as refused:
        _run(tmp_path)
    assert f"--resume {tmp_path}" not in str(refused.value)
    (tmp_path / ".lock").write_text('{"host": "elsewhere", "pid": 1}')
    with pytest.raises(VitoError, match=re.escape(f"remove {tmp_path / '.lock'}")) as locked:
        _run(tmp_path, resume=True)
    assert "--break-lock" not in str(locked.value)


def test_a_fine_tune_killed_before_its_first_checkpoint_starts_again_from_step_0(tmp_path: Path, capsys) -> None:
    whole, reference, _ = _run(tmp_path / "whole")
    _run(tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "checkpoints")  # as SIGKILL while writing the first checkpoint leaves it:
    (tmp_path / "killed" / "checkpoints").mkdir()  # the temporary file of an interrupted atomic write
    (tmp_path / "killed" / "checkpoints" / "step_0000002.pt.tmp").write_bytes(b"PK\x03")
    with pytest.raises(VitoError, match="--resume"):  # a plain rerun does not take the folder silently
        _run(tmp_path / "killed")
    again, model, calls = _run(tmp_path / "killed", resume=True)
    assert again.finished and len(calls) == 6 and "starting again from step 0" in capsys.readouterr().err
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
