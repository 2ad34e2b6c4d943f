"""Preemption of a submitit job: SIGUSR2 (submitit's signal) to a pretraining job's process ends the step, writes
a checkpoint and hands the signal back to submitit, which requeues the job; the requeued job resumes and finishes
with every tensor equal to an uninterrupted run. Real job processes of submitit's local executor, no SLURM.

Why the test signals the job's task process itself: that is what SLURM does. submitit's test hook for local jobs
(``LocalJob._interrupt``) signals the controller process, which does not forward SIGUSR2 (it dies of it); the
controller's own timeout signal fires at a wall-clock time, not after a step."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import tensors_equal, tiny_config
from tests.report.launch.job_calls import join_process_group
from vito.engine.checkpoint import load_checkpoint
from vito.engine.signals import STOP_SIGNALS, StopSignal, exit_status, stop_signals
from vito.engine.stopping import stopped_by
from vito.pretrain.loop import pretrain
from vito.report.launch.cluster import SubmititLauncher, wait_for_submitted
from vito.report.launch.jobs import DONE, Job
from vito.report.launch.ledger import Ledger
from vito.report.launch.preemption import set_torchrun_variables, torchrun_variables
from vito.report.launch.settings import LauncherSettings
from vito.report.runs import RunCell, run_job

pytest.importorskip("submitit")
STEPS = 12
OVERRIDES = [f"train.max_steps={STEPS}", "train.checkpoint_every=1000"]


def _task_pid(controller: int, run: Path, deadline: float) -> int:
    """The job's task process (the controller's child), once the run logged its first step."""
    metrics = run / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "no step logged in time"
        time.sleep(0.05)
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.slow
def test_a_preempted_pretraining_job_requeues_and_ends_bit_for_bit(videos: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job's process: one thread, as the straight run below
    run = tmp_path / "study" / "runs" / "tiny" / "seed-0"
    launcher = SubmititLauncher(tmp_path / "study", LauncherSettings(cluster="local", timeout_min=10),
                                echo=lambda _: None)
    # the study's own job of a run (train_run of a RunCell), as vito report submits it
    job = run_job(RunCell("tiny", 0, run, tiny_config(*OVERRIDES).to_dict(), str(videos)), tmp_path / "study")
    assert job.key == "runs/tiny/seed-0" and job.distributed
    launcher.submit(job)
    entry = launcher.ledger.entries["runs/tiny/seed-0"]
    os.kill(_task_pid(int(entry.job_id), run, time.monotonic() + 180), signal.SIGUSR2)
    wait_for_submitted(timeout_s=300)

    log = (run / "train.log").read_text()
    stopped = int(log.split("received SIGUSR2: finished step ")[1].split()[0].rstrip(","))
    assert 1 <= stopped < STEPS, log
    assert f"resuming run in {run}: steps {stopped}..{STEPS}" in log, log  # from the checkpoint, not afresh
    job_log = Path(entry.stdout).read_text() + Path(entry.stderr).read_text()
    assert f"Requeued job {entry.job_id}" in job_log, job_log
    assert Ledger(tmp_path / "study").entries["runs/tiny/seed-0"].state == "queued"  # collected by the next call
    assert SubmititLauncher(tmp_path / "study", echo=lambda _: None).ledger.entries["runs/tiny/seed-0"].state == DONE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = pretrain(tiny_config(*OVERRIDES), videos, tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)
    assert straight.step == STEPS
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(run)
    assert b["step"] == STEPS
    a.pop("path"), b.pop("path")
    for state in (a, b):  # numpy's and Python's global generators, which pretraining never draws from, hold each
        del state["rng"]["numpy"], state["rng"]["python"]  # process's start-up entropy (the job is another process)
    tensors_equal(a, b, "checkpoint")  # model, optimizer, torch's RNG state, config, data path: every tensor


def test_a_job_of_two_gpus_is_one_process_group_of_two(tmp_path: Path) -> None:
    """gpus_per_node=2: a run's job has 2 processes (submitit's tasks), which join one process group through
    vito.engine.distributed.setup (gloo here, on CPU) with torchrun's variables from submitit's job environment."""
    launcher = SubmititLauncher(tmp_path, LauncherSettings(cluster="local", gpus_per_node=2, timeout_min=5),
                                echo=lambda _: None)
    launcher.submit(Job("runs/ddp/seed-0", tmp_path / "ddp", (join_process_group, (tmp_path / "ddp",)),
                        distributed=True))
    wait_for_submitted(timeout_s=180)
    seen = sorted((json.loads(p.read_text()) for p in (tmp_path / "ddp").glob("rank*.json")), key=lambda r: r["rank"])
    assert seen == [{"rank": r, "local_rank": r, "world_size": 2, "mean_rank": 0.5} for r in range(2)], seen


def test_sigusr2_is_a_stop_signal_in_a_submitit_job_only(monkeypatch) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals() == STOP_SIGNALS
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert stop_signals() == (signal.SIGUSR2, *STOP_SIGNALS) and exit_status("SIGUSR2") == 143
    stop = StopSignal()
    with stop.installed():  # a cluster that sends SIGTERM, then the preemption signal: a preemption
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
    assert stop.name == "SIGUSR2"
    assert stopped_by([0.0, 0.5, 0.0, 0.0]) == "SIGTERM" and stopped_by([0.5, 0.5, 0.0, 0.0]) == "SIGUSR2"
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # submitit's own setting: already a stop signal
    assert stop_signals() == (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def test_torchrun_variables_from_submitit_job_environment(monkeypatch) -> None:
    """A job of 2 nodes x 4 GPUs (SLURM's variables): rank, local rank, world size, the first node as master, one
    port for every process of the job; variables torchrun already set are kept."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so that what set_torchrun_variables sets is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for name, value in {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
                        "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", "29500")
    set_torchrun_variables()
    assert {n: os.environ[n] for n in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu07"}
    assert os.environ["MASTER_PORT"] == "29500"
    ports = {torchrun_variables(r, r % 4, 8, ["a", "b"], "4242")["MASTER_PORT"] for r in range(8)}
    assert len(ports) == 1 and ports != {torchrun_variables(0, 0, 8, ["a"], "4243")["MASTER_PORT"]}




def test_a_stop_that_is_not_a_preemption_fails_the_job_after_its_checkpoint(monkeypatch) -> None:
    """SIGTERM (scancel) in a submitit job: no hand-back to submitit (no requeue), the job fails naming the stop;
    an error that names the stop (a fine-tune's FinetuneStopped) is raised as it is."""
    from types import SimpleNamespace

    from vito.engine.finetune import FinetuneStopped
    from vito.report.launch.preemption import JobStopped, Preemptible

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    for name, value in {"SUBMITIT_LOCAL_JOB_ID": "1", "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
                        "SUBMITIT_LOCAL_LOCALID": "0", "SUBMITIT_LOCAL_NODEID": "0",
                        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with pytest.raises(JobStopped, match="stopped by SIGTERM"):
        Preemptible(lambda: SimpleNamespace(stopped_by="SIGTERM"))()

    def stopped_fine_tune():
        raise FinetuneStopped("stopped at step 3", "SIGTERM")

    with pytest.raises(FinetuneStopped):
        Preemptible(stopped_fine_tune)()
    assert Preemptible((max, (2, 5)))() is None and Preemptible((max, (2, 5))).checkpoint().function.call == \
        (max, (2, 5))
