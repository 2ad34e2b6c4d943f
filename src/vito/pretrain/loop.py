"""The training loop: one readable function, DINO style, no framework.

``pretrain(config, data, run_dir, resume)`` reads top to bottom as the method does:

    set up processes and device → data → model → optimiser → for each step:
        photometric views on the device → forward (contrastive loss) → backward → LARS step
        → EMA update of the target → logging, checkpoints

Determinism: the data batch of step ``s`` on rank ``r`` is a pure function of ``(seed, s, r)``, and so are the
photometric augmentations (a generator seeded from the same triple). With the model, optimiser and RNG
states in the checkpoint, a resumed run on CPU repeats the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vito.config import Config, ConfigError
from vito.data.gpu_decode import JpegBatches, data_path_version, resolve_decode_device
from vito.engine import distributed, signals
from vito.engine.checkpoint import FORMAT, rng_state, save_checkpoint, set_rng_state
from vito.engine.precision import bf16_supported
from vito.engine.progress import ProgressLogHandler, progress
from vito.engine.run_files import MetricsLog, start_run_files
from vito.engine.run_folder import RunFolder
from vito.engine.signals import StopSignal
from vito.engine.stopping import LossWatch, finite_weights, non_finite_message
from vito.errors import VitoError
from vito.models.vito import build_vito
from vito.pretrain.feed import DeviceFeed, StepTimer
from vito.pretrain.resume import data_path, note_data_path_change, resume_point

log = logging.getLogger("vito.train")
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
    from vito.data.augment import PhotometricAugment
    from vito.pretrain.optim import LARS, ema_tau, learning_rate, param_groups

    t, o = config.train, config.optim
    # 0. everything that can be wrong with the input is found before the run folder is touched
    folder = RunFolder(run_dir, resume=start.resume, overwrite=start.overwrite, break_lock=start.break_lock,
                       is_main=context.is_main)
    folder.check()  # a typo'd --out into another run: refused now, not after minutes of start-up
    notes: list[str] = []  # for train.log, once it exists
    checkpoint = resume_point(run_dir, start.checkpoint, config, notes) if start.resume else None
    data = data_path(data, checkpoint, notes)
    start_step = checkpoint["step"] if checkpoint is not None else 0
    per_rank_batch = _per_rank_batch(config.data.batch_size, context.world_size)
    model = build_vito(config).to(context.device)
    check_image_size(model, config, context.device)
    if t.channels_last:  # channels_last weights make every convolution run (and return) NHWC
        model = model.to(memory_format=torch.channels_last)
    decode = resolve_decode_device(config.data.decode_device, context.device, data)
    data_version = data_path_version(decode)
    if checkpoint is not None:
        note_data_path_change(checkpoint, data_version, notes)
    loader = _loader(config, data, context, start_step, notes, decode, scan_cache=run_dir if start.resume else None)

    stop = StopSignal()
    with folder, stop.installed():
        if context.is_main:
            start_run_files(run_dir, config.to_dict(), start_step)  # on resume: metrics after the checkpoint go
            loader.dataset.save_scan(run_dir)  # the pre-scan's answer, for every resume of this run
        _setup_logging(run_dir if context.is_main else None)
        log.info("%s run in %s: steps %d..%d, %d process(es) x %d clips on %s",
                 "resuming" if start.resume else "starting", run_dir, start_step, t.max_steps, context.world_size,
                 per_rank_batch, context.device)
        for note in notes + folder.notes:
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
        augment = PhotometricAugment(size=config.data.image_size)
        autocast = _autocast(t.precision, context.device)

        # workers fork with stop signals held back, then ignore them; the loader's draw of its base seed must not
        # move the global generator (it is in the checkpoint, and a resumed run draws once more)
        with signals.blocked(), torch.random.fork_rng(devices=[]):
            feed = DeviceFeed(iter(loader), context.device, config.data.image_size, decode)
        watch = LossWatch(context.device)  # the loss stays on the device between syncs (vito.engine.stopping)
        skipped: dict[str, str] = {}  # unusable videos met so far: name -> reason
        result = RunResult(run_dir=run_dir, step=start_step, checkpoint=None)
        last_good = Path(checkpoint["path"]) if checkpoint is not None else None
        metrics = MetricsLog(run_dir, enabled=context.is_main)
        bar = progress(total=t.max_steps, initial=start_step, desc="pretrain", unit="step", enabled=context.is_main)
        tick, clips_since_tick, steps_since_tick = time.perf_counter(), 0, 0
        for step in range(start_step, t.max_steps):
            log_step = (step + 1) % t.log_every == 0 or step + 1 == t.max_steps
            timer = StepTimer(context.device) if log_step else None  # device time of log steps (CUDA)
            batch = feed.take()  # on the device (copied, and decoded for decode_device=cuda, on a side stream)
            for name, reason in batch["skipped"]:
                if name not in skipped:
                    skipped[name] = reason
                    log.warning("skipping unusable video (%d so far): %s", len(skipped), reason)
            result.skipped_videos = len(skipped)

            # 1. views: crops came from the loader (or the feed), photometry is drawn here, on the device
            views = batch["views"]
            images = _photometric_views(augment, views, _generator(t.seed, step, context.rank, context.device))

            # 2. loss, watched on the device: no host sync here (vito.engine.stopping)
            with autocast:
                out = network(images, video_index=batch["video_index"], gather=distributed.gather_keys)
            watch.add({"loss": out["loss"]}, step + 1)

            # 3. gradients, LARS step (lr from the warm-up + cosine schedule), EMA update of the target
            lr = learning_rate(step, o.base_lr, config.data.batch_size, o.warmup_steps, t.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            tau = ema_tau(step, t.max_steps, o.ema_base)
            model.update_target(tau)
            if timer is not None:
                timer.stop()
            if step + 1 < t.max_steps:
                feed.prefetch()  # the next batch loads while the device still computes this one
            result.step = step + 1
            clips_since_tick += config.data.batch_size
            steps_since_tick += 1

            # 3b. the host reads the loss, its finiteness and the stop agreement at log and checkpoint steps
            # only (and at once in a single process asked to stop): a non-finite loss stops the run within
            # train.log_every steps, before any checkpoint
            save = result.step % t.checkpoint_every == 0 or result.step == t.max_steps
            if log_step or save or (context.world_size == 1 and stop.requested):
                agreed = watch.agree(stop)
                if agreed.non_finite is not None:
                    raise _logged(VitoError(non_finite_message(agreed.non_finite, last_good, NON_FINITE_ADVICE)))
                loss, stopped_by = agreed.loss, agreed.stopped_by
                result.last_loss = loss
            else:
                stopped_by = None

            # 4. logging and checkpoints (rank 0 writes every file)
            if log_step or stopped_by:
                now = time.perf_counter()
                record = {"step": result.step, "loss": loss, "lr": lr, "tau": tau,
                          "clips_per_s": clips_since_tick / max(now - tick, 1e-9),
                          "skipped": result.skipped_videos, **_attention_entropy(out),
                          **_input_wait(feed, now - tick, steps_since_tick, timer)}
                tick, clips_since_tick, steps_since_tick = now, 0, 0
                result.history.append(record)
                try:
                    metrics.write(record, last_good)  # a full disk: the run stops with the checkpoint it has
                except VitoError as error:
                    _logged(error)
                    raise
                log.info("step %d loss %.4f lr %.4g tau %.5f %.1f clips/s skipped %d", record["step"], record["loss"],
                         record["lr"], record["tau"], record["clips_per_s"], record["skipped"],
                         extra={"file_only": True})
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", clips_s=f"{record['clips_per_s']:.1f}",
                                wait=f"{record['data_wait_share']:.0%}", skipped=result.skipped_videos)
            bar.update(1)
            if save or stopped_by:
                if not finite_weights(model):  # never a checkpoint from non-finite weights, on any rank
                    what = f"the weights became non-finite by step {result.step}"
                    raise _logged(VitoError(non_finite_message(what, last_good, NON_FINITE_ADVICE)))
                if context.is_main:
                    state = _checkpoint_state(result.step, config, model, optimizer, data, context.world_size,
                                              data_version)
                    try:
                        last_good = save_checkpoint(run_dir, state, keep=t.keep_checkpoints)
                    except VitoError as error:  # a full disk: say so in train.log too
                        _logged(error)
                        raise
                result.checkpoint = last_good
            if stopped_by:
                result.stopped_by = stopped_by
                log.info("received %s: finished step %d, checkpoint saved at %s; continue with "
                         "`vito pretrain --resume %s`; exiting with status %d", stopped_by, result.step,
                         last_good, run_dir, signals.exit_status(stopped_by))
                break
        bar.close()
        metrics.close()
        if result.stopped_by is None:
            log.info("finished %d steps, final loss %.4f, %d video(s) skipped; checkpoint %s",
                     result.step, result.last_loss, result.skipped_videos, result.checkpoint)
    return result


# --------------------------------------------------------------------------------------------------
# Before the run folder: resume point, data, model at the image size, loader


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


def _loader(config: Config, data: Path, context: distributed.Context, start_step: int, notes: list[str],
            decode: str = "cpu", scan_cache: Path | None = None):
    """DataLoader of this rank's batches from ``start_step``; opening it checks the data has a usable video.

    Workers are capped at the CPUs available to this process (shared by the processes of this host), and
    leave stop signals to the main process (:mod:`vito.engine.signals`).
    """
    from vito.data.sources import build_pretrain_loader

    workers = distributed.worker_count(config.data.num_workers)
    if workers < config.data.num_workers:
        notes.append(f"data.num_workers={config.data.num_workers}, but this process has {workers} CPU(s) "
                     f"to itself: using {workers} DataLoader worker(s)")
    data_cfg = dataclasses.replace(config.data, num_workers=workers)
    loader = build_pretrain_loader(data, data_cfg, config.train.seed, rank=context.rank,
                                   world_size=context.world_size, start_step=start_step, scan_cache=scan_cache,
                                   batches=JpegBatches if decode == "cuda" else None)
    loader.pin_memory = context.device.type == "cuda"  # the feed copies batches from pinned memory
    loader.worker_init_fn = functools.partial(_init_worker, loader.worker_init_fn)
    return loader


def _init_worker(init: Callable[[int], None] | None, worker_id: int) -> None:
    signals.ignore_stop_signals_in_worker(worker_id)
    if init is not None:
        init(worker_id)


def _logged(error: VitoError) -> VitoError:
    """Errors that end a started run also go to train.log (the terminal may be gone)."""
    log.error("%s", error, extra={"file_only": True})
    return error


# --------------------------------------------------------------------------------------------------
# Pieces of the loop


def _per_rank_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise VitoError(f"data.batch_size={global_batch} is not divisible by the {world_size} processes")
    return global_batch // world_size


def _generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator that depends only on (seed, step, rank): augmentations survive a resume unchanged."""
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) % (2**63 - 1))
    return generator


def _photometric_views(augment, views: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 [B, V, 3, S, S] → normalised float [B, V, 3, S, S], each view with its view-specific blur/solarize."""
    b, v = views.shape[:2]
    view_index = torch.arange(v, device=views.device).repeat(b)
    images = augment(views.flatten(0, 1), view_index, generator)
    return images.unflatten(0, (b, v))


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
                      data: str | Path, world_size: int, data_version: str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# train.log


def _setup_logging(run_dir: Path | None) -> None:
    """train.log in the run folder (rank 0 only), and messages printed above the progress bar."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(formatter)
        log.addHandler(file_handler)
        log.addHandler(ProgressLogHandler())
