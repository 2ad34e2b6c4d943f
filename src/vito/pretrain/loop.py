"""The pretraining loop: one function for the run, one class for its steps, DINO style, no framework.

``pretrain(config, data, run_dir, resume)`` reads top to bottom as the method does:

    set up processes and device → data → model → optimiser → for each step:
        photometric views on the device → forward (contrastive loss) → backward → LARS step
        → EMA update of the target → logging, checkpoints

What every training loop shares comes from the engine (:mod:`vito.engine`): the run folder and its lock, stop
signals and the non-finite check (``stopping``), checkpoints, ``config.yaml``/``metrics.jsonl``/TensorBoard
(``run_files``), the progress bar, DDP. VITO's own step (views, LARS, the EMA target) is written here.

Determinism: the data batch of step ``s`` on rank ``r`` is a pure function of ``(seed, s, r)``, and so are the
photometric augmentations (a generator seeded from the same triple). With the model, optimiser and RNG
states in the checkpoint, a resumed run on CPU repeats the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vito.config import Config, ConfigError
from vito.data.augment import make_views
from vito.data.gpu_decode import data_path_version, resolve_decode_device
from vito.data.pretrain_batches import SkipCounter
from vito.engine import distributed, signals
from vito.engine.checkpoint import FORMAT, rng_state, save_checkpoint, set_rng_state
from vito.engine.loggers import check_installed
from vito.engine.precision import bf16_supported
from vito.engine.progress import Progress, ProgressLogHandler, progress
from vito.engine.run_files import MetricsLog, start_run_files
from vito.engine.run_folder import RunFolder
from vito.engine.signals import StopSignal
from vito.engine.stopping import LossWatch, finite_weights, non_finite_message
from vito.errors import VitoError
from vito.models.vito import build_vito
from vito.pretrain.feed import DeviceFeed, StepTimer, pretrain_loader
from vito.pretrain.optim import LARS, ema_tau, learning_rate, param_groups, warmup_length
from vito.pretrain.resume import data_path, never_checkpointed, note_data_path_change, resume_point
from vito.pretrain.step_estimate import estimate_step_seconds, grace_warning

log = logging.getLogger(__name__)
NON_FINITE_ADVICE = "Lower optim.base_lr or raise optim.warmup_steps, then resume or start again."


@dataclass
class RunResult:
    """What a finished (or cleanly interrupted) run reports."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    stopped_by: str | None = None  # "SIGTERM"/"SIGINT"/"SIGUSR1" when a signal ended the run early
    skipped_videos: int = 0
    last_loss: float = math.nan
    history: list[dict[str, Any]] = field(default_factory=list)


def pretrain(config: Config, data: str | Path | None, run_dir: str | Path, resume: bool = False, *,
             checkpoint: str | Path | None = None, overwrite: bool = False, break_lock: bool = False) -> RunResult:
    """Pretrain VITO (or MoCLR) from videos in ``data``; everything the run writes goes to ``run_dir``.

    ``resume``: continue the run in ``run_dir`` from its newest intact checkpoint, or from ``checkpoint``
    (one of its files). ``overwrite``: start afresh in a folder holding a run (its files are deleted).
    ``break_lock``: take a folder locked by a run on another host. A run stopped by a signal returns with
    ``stopped_by`` set (the CLI exits with :func:`vito.engine.signals.exit_status`).
    """
    run_dir = Path(run_dir)
    context = distributed.setup(config.train.device)
    try:
        return _train(config, data, run_dir, context, _Start(resume, checkpoint, overwrite, break_lock))
    finally:
        distributed.cleanup()


@dataclass(frozen=True)
class _Start:
    """How a run begins: fresh or resumed (from which file), and what it may do to its folder."""

    resume: bool
    checkpoint: str | Path | None
    overwrite: bool
    break_lock: bool


def _train(config: Config, data: str | Path | None, run_dir: Path, context: distributed.Context,
           start: _Start) -> RunResult:
    t, o = config.train, config.optim
    # 0. everything that can be wrong with the input is found before the run folder is touched
    check_installed(t.loggers)  # a logger's missing extra: one line naming it
    from_zero = start.checkpoint is None and never_checkpointed(run_dir, config, start.resume, start.overwrite)
    folder = RunFolder(run_dir, resume=start.resume or from_zero, overwrite=start.overwrite,
                       break_lock=start.break_lock, is_main=context.is_main)
    folder.check()  # a typo'd --out into another run: refused now, not after minutes of start-up
    notes: list[str] = []  # for train.log, once it exists
    if from_zero:
        notes.append(f"{run_dir} holds this run without a checkpoint (stopped before its first one): it starts "
                     "again from step 0")
    checkpoint = resume_point(run_dir, start.checkpoint, config, notes) if start.resume and not from_zero else None
    data = data_path(data, checkpoint, notes)
    start_step = checkpoint["step"] if checkpoint is not None else 0
    per_rank_batch = _per_rank_batch(config.data.batch_size, context.world_size)
    model = build_vito(config).to(context.device)
    check_image_size(model, config, context.device)
    if t.channels_last:  # channels_last weights make every convolution run (and return) NHWC
        model = model.to(memory_format=torch.channels_last)
    if context.is_main and t.stop_grace_seconds > 0:
        seconds, clips = estimate_step_seconds(model, config, context.device, per_rank_batch,
                                               _autocast(t.precision, context.device))
        notes += [text for text in [grace_warning(config, seconds, clips, per_rank_batch)] if text]
    decode = resolve_decode_device(config.data.decode_device, context.device, data)
    data_version = data_path_version(decode)
    if checkpoint is not None:
        note_data_path_change(checkpoint, data_version, notes)
    loader = pretrain_loader(config, data, context, start_step, notes, decode,
                             scan_cache=run_dir if start.resume else None)

    # 1. the run, in its locked folder; a stop signal ends it after a step and a checkpoint
    stop = StopSignal()
    with folder, stop.installed():
        if context.is_main:  # on resume: the metrics logged after the checkpoint go
            notes += start_run_files(run_dir, config.to_dict(), start_step)
            loader.dataset.save_scan(run_dir)  # the pre-scan's answer, for every resume of this run
        _setup_logging(run_dir if context.is_main else None)
        log.info("%s run in %s: steps %d..%d, %d process(es) x %d clips on %s",
                 "resuming" if start.resume else "starting", run_dir, start_step, t.max_steps, context.world_size,
                 per_rank_batch, context.device)
        for note in notes + folder.notes + _warmup_notes(config):
            log.warning(note)

        optimizer = LARS(param_groups(model, o.weight_decay), lr=0.0, momentum=o.momentum,
                         weight_decay=o.weight_decay, trust_coefficient=o.trust_coefficient)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            set_rng_state(checkpoint["rng"])
        network = distributed.wrap_for_training(model, context)
        if t.compile:
            network = torch.compile(network)
        # workers fork with stop signals held back, then ignore them; the loader's draw of its base seed must not
        # move the global generator (it is in the checkpoint, and a resumed run draws once more)
        with signals.blocked(), torch.random.fork_rng(devices=[]):
            feed = DeviceFeed(iter(loader), context.device, config.data.image_size, decode)
        steps = _Steps(config, context, run_dir, model, network, optimizer, feed, (data, data_version))
        return steps.run(start_step, Path(checkpoint["path"]) if checkpoint is not None else None, stop)


class _Steps:
    """The steps of one run and what they share: model, optimiser and input, the loss watch, the metrics log
    and the result so far. :meth:`run` is the loop; the parts of a step follow it in the order they happen."""

    def __init__(self, config: Config, context: distributed.Context, run_dir: Path, model: torch.nn.Module,
                 network: torch.nn.Module, optimizer: torch.optim.Optimizer, feed: DeviceFeed,
                 data: tuple[Path, str]) -> None:
        self.config, self.context, self.run_dir, self.data = config, context, run_dir, data
        self.model, self.network, self.optimizer, self.feed = model, network, optimizer, feed
        self.autocast = _autocast(config.train.precision, context.device)
        self.watch = LossWatch(context.device)  # the loss stays on the device between syncs
        self.metrics = MetricsLog(run_dir, enabled=context.is_main, loggers=config.train.loggers)
        self.skipped = SkipCounter()  # unusable videos met so far
        self.since_log = _SinceLog()
        self.result = RunResult(run_dir=run_dir, step=0, checkpoint=None)
        self.last_good: Path | None = None

    def run(self, start_step: int, last_good: Path | None, stop: StopSignal) -> RunResult:
        t, result = self.config.train, self.result
        result.step, self.last_good = start_step, last_good
        bar = progress(total=t.max_steps, initial=start_step, desc="pretrain", unit="step",
                       enabled=self.context.is_main)
        with bar, contextlib.closing(self.metrics):
            for step in range(start_step, t.max_steps):
                log_step = (step + 1) % t.log_every == 0 or step + 1 == t.max_steps
                timer = StepTimer(self.context.device) if log_step else None  # device time of log steps (CUDA)
                out, lr, tau = self._step(step)
                if timer is not None:
                    timer.stop()
                if step + 1 < t.max_steps:
                    self.feed.prefetch()  # the next batch loads while the device still computes this one
                result.step = step + 1
                self.since_log.add(self.config.data.batch_size)
                # the host reads the loss, its finiteness and the stop agreement at log and checkpoint steps only
                # (and at once in a single process asked to stop): a non-finite loss stops the run within
                # train.log_every steps, before any checkpoint
                save = result.step % t.checkpoint_every == 0 or result.step == t.max_steps
                stopped_by = None
                if log_step or save or (self.context.world_size == 1 and stop.requested):
                    stopped_by = self._sync(stop)
                if log_step or stopped_by:
                    self._log(out, lr, tau, timer, bar)
                bar.update(1)
                if save or stopped_by:
                    self._save()
                if stopped_by:
                    self._stop(stopped_by)
                    break
        if result.stopped_by is None:
            log.info("finished %d steps, final loss %.4f, %d video(s) skipped; checkpoint %s",
                     result.step, result.last_loss, result.skipped_videos, result.checkpoint)
        return result

    def _step(self, step: int) -> tuple[dict[str, Any], float, float]:
        """One step of VITO; returns the model's output, the learning rate and the EMA rate used."""
        t, o, context = self.config.train, self.config.optim, self.context
        batch = self.feed.take()  # on the device (copied, and decoded for decode_device=cuda, on a side stream)
        self._note_skipped(batch["skipped"])

        # 1. views: crops came from the loader (or the feed), photometry is drawn here, on the device
        generator = _generator(t.seed, step, context.rank, context.device)
        images = make_views(batch, self.config, generator)

        # 2. loss, watched on the device: no host sync here (vito.engine.stopping)
        with self.autocast:
            out = self.network(images, video_index=batch["video_index"], gather=distributed.gather_keys)
        self.watch.add({"loss": out["loss"]}, step + 1)

        # 3. gradients, LARS step (lr from the warm-up + cosine schedule), EMA update of the target
        lr = learning_rate(step, o.base_lr, self.config.data.batch_size,
                           warmup_length(o, self.config.data.batch_size), t.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        tau = ema_tau(step, t.max_steps, o.ema_base)
        self.model.update_target(tau)
        return out, lr, tau

    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        new = self.skipped.update(skipped)
        for count, reason in enumerate(new, start=self.skipped.total - len(new) + 1):
            log.warning("skipping unusable video (%d so far): %s", count, reason)
        self.result.skipped_videos = self.skipped.total

    def _sync(self, stop: StopSignal) -> str | None:
        """The host sync: the loss (mean over processes), a non-finite one on any process, any stop signal."""
        agreed = self.watch.agree(stop)
        if agreed.non_finite is not None:
            raise _logged(VitoError(non_finite_message(agreed.non_finite, self.last_good, NON_FINITE_ADVICE)))
        self.result.last_loss = agreed.loss
        return agreed.stopped_by

    def _log(self, out: dict[str, Any], lr: float, tau: float, timer: StepTimer | None, bar: Progress) -> None:
        """One line of metrics.jsonl and TensorBoard (rank 0), the run's history, the bar's figures."""
        result = self.result
        seconds, clips, steps = self.since_log.take()
        record = {"step": result.step, "loss": result.last_loss, "lr": lr, "tau": tau,
                  "clips_per_s": clips / max(seconds, 1e-9), "skipped": result.skipped_videos,
                  **_attention_entropy(out), **_input_wait(self.feed, seconds, steps, timer)}
        result.history.append(record)
        try:
            self.metrics.write(record, self.last_good)  # a full disk: the run stops with the checkpoint it has
        except VitoError as error:
            _logged(error)
            raise
        log.info("step %d loss %.4f lr %.4g tau %.5f %.1f clips/s skipped %d", record["step"], record["loss"],
                 record["lr"], record["tau"], record["clips_per_s"], record["skipped"], extra={"file_only": True})
        bar.set_postfix(loss=f"{result.last_loss:.3f}", lr=f"{lr:.3g}", clips_s=f"{record['clips_per_s']:.1f}",
                        wait=f"{record['data_wait_share']:.0%}", skipped=result.skipped_videos)

    def _save(self) -> None:
        """A checkpoint of this step, written by rank 0; never from non-finite weights (checked on every rank)."""
        if not finite_weights(self.model):
            what = f"the weights became non-finite by step {self.result.step}"
            raise _logged(VitoError(non_finite_message(what, self.last_good, NON_FINITE_ADVICE)))
        if self.context.is_main:
            state = _checkpoint_state(self.result.step, self.config, self.model, self.optimizer, *self.data,
                                      self.context.world_size)
            try:
                self.last_good = save_checkpoint(self.run_dir, state, keep=self.config.train.keep_checkpoints)
            except VitoError as error:  # a full disk: say so in train.log too
                _logged(error)
                raise
        self.result.checkpoint = self.last_good

    def _stop(self, stopped_by: str) -> None:
        self.result.stopped_by = stopped_by
        log.info("received %s: finished step %d, checkpoint saved at %s; continue with `vito pretrain --resume %s`; "
                 "exiting with status %d", stopped_by, self.result.step, self.last_good, self.run_dir,
                 signals.exit_status(stopped_by))


class _SinceLog:
    """Wall time, clips and steps since the last log step: clips/s and the share of time spent waiting for input."""

    def __init__(self) -> None:
        self.tick, self.clips, self.steps = time.perf_counter(), 0, 0

    def add(self, clips: int) -> None:
        self.clips += clips
        self.steps += 1

    def take(self) -> tuple[float, int, int]:
        now = time.perf_counter()
        seconds, clips, steps = now - self.tick, self.clips, self.steps
        self.tick, self.clips, self.steps = now, 0, 0
        return seconds, clips, steps


# --------------------------------------------------------------------------------------------------
# Before the run folder: the model at the image size


def check_image_size(model: torch.nn.Module, config: Config, device: torch.device) -> None:
    """A forward pass of two blank images at ``data.image_size``: a backbone that cannot run at that size
    fails here, before the run folder is touched, with a message naming the key (not a traceback at step 1)."""
    size = config.data.image_size
    images = torch.zeros(2, 3, size, size, device=device)
    model.eval()
    try:
        with torch.no_grad():
            model.online(images)
    except (RuntimeError, ValueError, AssertionError, IndexError) as error:
        raise ConfigError(f"data.image_size={size}: model.backbone={config.model.backbone!r} cannot run at this "
                          f"size ({type(error).__name__}: {error})") from error
    finally:
        model.train()


# --------------------------------------------------------------------------------------------------
# Pieces of a step and of its log line


def _warmup_notes(config: Config) -> list[str]:
    """A warm-up as long as the run (the default 10 epochs in a short run) never reaches the peak lr: say so."""
    steps = warmup_length(config.optim, config.data.batch_size)
    if steps < config.train.max_steps:
        return []
    return [f"the lr warm-up ({steps} steps) is not shorter than the run ({config.train.max_steps} steps), so the "
            "lr never reaches its peak: set optim.warmup_epochs or optim.warmup_steps (`vito docs pretraining`)"]


def _per_rank_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise VitoError(f"data.batch_size={global_batch} is not divisible by the {world_size} processes")
    return global_batch // world_size


def _generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator that depends only on (seed, step, rank): augmentations survive a resume unchanged."""
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) % (2**63 - 1))
    return generator


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where the hardware computes in bf16; fp32 otherwise.

    On a CPU without bf16 instructions (AVX512-BF16 or AMX) emulated bf16 is several times *slower* than fp32.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    if not bf16_supported(device):
        log.info("no bf16 arithmetic on this %s: training in fp32", device.type)
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _input_wait(feed: DeviceFeed, seconds: float, steps: int, timer: StepTimer | None) -> dict[str, float]:
    """How input-bound the loop was since the last log: time per step spent waiting for the loader, its
    share of the wall time, and (CUDA) the device time of this log step from CUDA events."""
    waited, feed.waited = feed.waited, 0.0
    record = {"data_wait_s": waited / max(steps, 1), "data_wait_share": min(waited / max(seconds, 1e-9), 1.0),
              "step_s": seconds / max(steps, 1)}
    gpu = timer.seconds() if timer is not None else None
    if gpu is not None:
        record["gpu_step_s"] = gpu
    return record


def _attention_entropy(out: dict[str, Any]) -> dict[str, float]:
    """Entropy of each stage's attention mask over log(h·w): 1 = uniform, 0 = a single position."""
    return {f"attention_entropy/stage{s + 1}": float(e) for s, e in enumerate(out.get("mask_entropy", []))}


def _checkpoint_state(step: int, config: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      data: Path, data_version: str, world_size: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "step": step,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "data_path": str(data),  # absolute: resume works from any folder
        "world_size": world_size,
        "data_path_version": data_version,  # how the batches were made (vito.data.gpu_decode)
    }


def _logged(error: VitoError) -> VitoError:
    """Errors that end a started run also go to train.log (the terminal may be gone)."""
    log.error("%s", error, extra={"file_only": True})
    return error


def _setup_logging(run_dir: Path | None) -> None:
    """train.log in the run folder (rank 0 only), and messages printed above the progress bar."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file_handler)
        log.addHandler(ProgressLogHandler())
