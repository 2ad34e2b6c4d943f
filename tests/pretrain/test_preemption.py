"""Preemption: signals to the main process or its whole process group (DataLoader workers included) end the
run after the step in flight with a checkpoint and exit status 128 + signal; a resume repeats the
uninterrupted run bit for bit, from videos and from still images. Real `vito pretrain` subprocesses with 2
DataLoader workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.data.conftest import unreadable
from tests.helpers import TINY_OVERRIDES, tensors_equal, tiny_config
from vito.config import load_config
from vito.engine.checkpoint import load_checkpoint
from vito.engine.signals import STOP_SIGNALS, StopSignal, exit_status, ignore_stop_signals_in_worker
from vito.pretrain.loop import pretrain

WORKERS = ["data.num_workers=2"]


def _start(run: Path, data: Path, max_steps: int, preset: str = "demo") -> subprocess.Popen:
    """`vito pretrain` in its own process group (as a batch job or a terminal's foreground job runs)."""
    command = [sys.executable, "-m", "vito", "pretrain", "--config", preset, "--data", str(data), "--out", str(run),
               "--max-steps", str(max_steps), *TINY_OVERRIDES, *WORKERS, "train.checkpoint_every=1000"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_first_step(process: subprocess.Popen, run: Path) -> None:
    """Until step 1 is logged, with both DataLoader workers (children of the main process) alive."""
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no step within 180 s"
        time.sleep(0.1)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) >= 2, f"expected 2 DataLoader workers, found children {children}"


def _stop(process: subprocess.Popen, run: Path, signum: signal.Signals, whole_group: bool) -> str:
    _wait_for_first_step(process, run)
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    try:
        return process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def _one_thread_run(*args, **kwargs):
    """An in-process run with the subprocess's single thread: same float reductions, same bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_sigterm_to_the_process_group_checkpoints_and_resumes_bit_for_bit(videos: Path, tmp_path: Path) -> None:
    run = tmp_path / "split"
    process = _start(run, videos, max_steps=8)
    output = _stop(process, run, signal.SIGTERM, whole_group=True)
    assert process.returncode == 143, output
    stopped = load_checkpoint(run)
    assert 1 <= stopped["step"] < 8, output
    log = (run / "train.log").read_text()
    assert f"received SIGTERM: finished step {stopped['step']}" in log and "Traceback" not in output, output
    assert not (run / ".lock").exists()

    config = tiny_config(*WORKERS, "train.max_steps=8", "train.checkpoint_every=1000")
    resumed = _one_thread_run(config, None, run, resume=True)
    straight = _one_thread_run(config, videos, tmp_path / "straight")
    assert resumed.step == straight.step == 8 and resumed.stopped_by is None
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(run)
    a.pop("path"), b.pop("path")
    tensors_equal(a, b, "checkpoint")  # model, optimizer, RNG states, config, data path: every tensor and value


@pytest.mark.slow
def test_sigterm_and_resume_from_still_images_bit_for_bit(shared_data: Path, tmp_path: Path) -> None:
    """The MoCLR image baseline (moclr_r50) on shared ImageNet images and a broken one: the skip is counted in
    train.log, and a resume after SIGTERM to the process group repeats the uninterrupted run exactly."""
    images = tmp_path / "images"
    images.mkdir()
    for image in sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))[:8]:
        (images / image.name).symlink_to(image)
    unreadable("truncated", images / "truncated.png")
    run = tmp_path / "split"
    process = _start(run, images, max_steps=6, preset="moclr_r50")
    output = _stop(process, run, signal.SIGTERM, whole_group=True)
    assert process.returncode == 143, output
    stopped = load_checkpoint(run)
    assert 1 <= stopped["step"] < 6, output
    log = (run / "train.log").read_text()
    assert f"skipping unusable video (1 so far): cannot read image {images / 'truncated.png'}" in log, log

    config = load_config("moclr_r50", [*TINY_OVERRIDES, *WORKERS, "train.max_steps=6", "train.checkpoint_every=1000"])
    resumed = _one_thread_run(config, None, run, resume=True)
    straight = _one_thread_run(config, images, tmp_path / "straight")
    assert resumed.step == straight.step == 6 and straight.skipped_videos == 1
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(run)
    a.pop("path"), b.pop("path")
    tensors_equal(a, b, "checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "whole_group", "status"), [
    (signal.SIGINT, True, 130),  # Ctrl-C: the terminal signals the whole foreground process group
    (signal.SIGUSR1, False, 143),  # SLURM's --signal=USR1@120 early warning, to the main process
])
def test_stop_signals_exit_with_128_plus_the_signal(videos: Path, tmp_path: Path, signum, whole_group,
                                                    status) -> None:
    process = _start(tmp_path, videos, max_steps=1000)
    output = _stop(process, tmp_path, signum, whole_group)
    assert process.returncode == status == exit_status(signum.name), output
    state = load_checkpoint(tmp_path)
    assert 1 <= state["step"] < 1000
    assert f"received {signum.name}: finished step {state['step']}" in (tmp_path / "train.log").read_text()
    assert "Traceback" not in output, output


def test_exit_statuses() -> None:
    assert [exit_status(s.name) for s in STOP_SIGNALS] == [143, 130, 143]


def test_workers_ignore_stop_signals() -> None:
    """What a DataLoader worker runs at start: every stop signal ignored (and no longer blocked)."""
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        ignore_stop_signals_in_worker(0)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)
        assert not set(STOP_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])
        os.kill(os.getpid(), signal.SIGUSR1)  # would end the process if not ignored
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_a_second_ctrl_c_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)  # Python's default, unless the session running the test set another
    stop = StopSignal()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's second signal: still a clean stop, named by the first
        assert (stop.requested, stop.name) == (True, "SIGUSR1")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs in the main thread between bytecodes
    assert signal.getsignal(signal.SIGINT) is before  # the handler found is put back
