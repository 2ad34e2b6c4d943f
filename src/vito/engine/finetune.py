"""The one fine-tuning loop of the transfer evaluations (segmentation, detection, UCF-101): one readable function.

Why not the pretraining loop: pretraining has an EMA target, LARS and views; a transfer fine-tune is only
``loss(model, batch) → backward → step`` with a learning-rate schedule. What both share comes from the engine,
written once: one run per folder with a lock (``run_folder.RunFolder``), stop signals that finish the step and
checkpoint, agreed by every process, and the non-finite check (``stopping``), atomic checkpoints with fallback
to the newest intact one (``checkpoint``, in a format of the caller's kind, e.g. ``"vito-segment/1"``),
``config.yaml``/``metrics.jsonl``/TensorBoard (``run_files``), the progress bar (``progress``), torchrun DDP with
synchronised batch norm (``distributed.wrap_for_training``) and bf16 autocast on CUDA (``precision``).

Run-folder rule (the pretraining rule): the folder's ``config.yaml`` is the identity of the fine-tune. A
finished fine-tune with the same config is reused (its weights are loaded, nothing is trained); a stopped
one continues with ``resume=True``; a different config is refused unless ``overwrite=True``.

Host syncs: the loss stays on the device between log and checkpoint steps (``stopping.LossWatch``); a non-finite
loss stops the run at the next of those steps, before any checkpoint, and a single process asked to stop
stops after the step it is in (several processes: at the next log or checkpoint step, all after the same one).

Batches: the caller's ``batches(start_step)`` must make the batch of step ``s`` a pure function of ``s``
(``vito.data.stream.StepStream``), so a resumed fine-tune on CPU repeats the uninterrupted one. A batch may list
the items it replaced (``"skipped"``: ``(item, reason)`` pairs, collected in the result) or, for data that stops
the run, carry ``"error"``: raised here as a one-line ``DataError`` (raised in a DataLoader worker, it would reach
the user wrapped in the worker's traceback, and the process would hang at exit on the worker).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from vito.engine import distributed
from vito.engine.checkpoint import has_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vito.engine.loggers import check_installed, check_names
from vito.engine.precision import uses_bf16
from vito.engine.progress import progress, write
from vito.engine.run_files import CONFIG_FILE, MetricsLog, start_run_files
from vito.engine.run_folder import RunFolder, holds_run
from vito.engine.signals import StopSignal, blocked, ignore_stop_signals_in_worker
from vito.engine.stopping import LossWatch, finite_weights, non_finite_message
from vito.errors import DataError, VitoError
from vito.schema import read_yaml

LossFn = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]  # must hold "loss"; the rest is logged
NON_FINITE_ADVICE = "Lower the learning rate, then start again (--overwrite, or another --out)."


class FinetuneStopped(VitoError):
    """A stop signal ended a fine-tune early (after a checkpoint); ``--resume`` continues it."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.stopped_by = signal_name


@dataclass
class FinetuneSpec:
    """How long and how to train, and the identity of the run (``config``, a JSON-like mapping)."""

    format: str  # checkpoint kind, e.g. "vito-segment/1"
    iterations: int
    config: dict[str, Any]
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "auto"  # auto: bf16 autocast on CUDA with bf16 support, else fp32; or fp32 / bf16
    description: str = "fine-tune"
    loggers: tuple[str, ...] = ("tensorboard",)  # where metrics go besides metrics.jsonl (vito.engine.loggers)


@dataclass
class FinetuneResult:
    run_dir: Path
    step: int
    finished: bool
    reused: bool = False
    stopped_by: str | None = None  # signal name when a stop request ended the run early
    last_loss: float = math.nan  # at the last log or checkpoint step, mean over processes
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def raise_if_stopped(self) -> None:
        """A fine-tune ended by a stop signal ends its evaluation: ``FinetuneStopped`` (the CLI exits 128 + signal)."""
        if self.stopped_by is not None:
            raise FinetuneStopped(f"{self.run_dir}: stopped by {self.stopped_by} after step {self.step} (checkpoint "
                                  "written); continue with --resume", self.stopped_by)


def make_loader(batches: IterableDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    """An iterator over a stream of whole batches, workers started with stop signals blocked and ignoring them.

    The DataLoader draws its workers' seeds from a generator of its own: starting workers draws from the
    global torch RNG otherwise, and a resumed fine-tune starts them again after restoring that RNG, so it would
    continue with another RNG state than a run never stopped (the batches themselves are functions of the step).
    """
    num_workers = distributed.worker_count(num_workers)
    loader = DataLoader(batches, batch_size=None, num_workers=num_workers, generator=torch.Generator().manual_seed(0),
                        worker_init_fn=ignore_stop_signals_in_worker if num_workers else None)
    with blocked():
        return iter(loader)


def finetune(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    batches: Callable[[int], Iterable[dict[str, Any]]],
    run_dir: Path,
    spec: FinetuneSpec,
    context: distributed.Context,
    resume: bool = False,
    overwrite: bool = False,
) -> FinetuneResult:
    """Train ``model`` for ``spec.iterations`` steps in ``run_dir`` (or reuse/continue what is there).

    ``lr_at(step)`` is the learning rate of step ``step`` (0-based) for every parameter group, scaled by a
    group's ``lr_scale`` when it has one; ``batches(start)`` yields the batches of steps ``start, start+1...``.
    On return ``model`` holds the trained weights (also when reused or stopped).
    """
    run_dir = Path(run_dir)
    check_names(spec.loggers, "loggers")
    check_installed(spec.loggers)  # a logger's missing extra: one line naming it, before the folder is touched
    config = _plain(spec.config)
    found = _existing(run_dir, config, spec, overwrite)
    if found is not None and found["step"] >= spec.iterations:
        model.load_state_dict(found["model"])
        return FinetuneResult(run_dir, found["step"], finished=True, reused=True, skipped=_saved_skipped(found),
                              notes=["reused a finished run"])
    # --resume of a run stopped before its first checkpoint (config.yaml equal, checked above): from step 0
    never_saved = resume and holds_run(run_dir) and not overwrite and not has_checkpoint(run_dir)
    with RunFolder(run_dir, resume=resume and holds_run(run_dir), overwrite=overwrite,
                   is_main=context.is_main, kind=spec.format.split("/")[0], resume_hint="the same command and --resume",
                   break_lock_hint=None) as folder:
        if never_saved:
            folder.notes.append("no checkpoint yet (stopped before its first one): starting again from step 0")
        state = found if resume else None  # the newest checkpoint of this run, if it wrote one
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
        start = state["step"] if state is not None else 0
        notes = start_run_files(run_dir, config, start, sort_keys=True) if context.is_main else []  # (resume: the
        last_good = Path(state["path"]) if state is not None else None  # metrics after the checkpoint go)
        for note in folder.notes + notes:  # what was found and mended on the way in: said before training
            write(f"{spec.description}: {note}", file=sys.stderr)
        run = _Run(run_dir, spec, context, start, _saved_skipped(state) if state is not None else [])
        result = _train(model, loss_fn, optimizer, lr_at, batches, run, last_good)
        result.notes = folder.notes + notes + result.notes
        return result


@dataclass(frozen=True)
class _Run:
    """Where a fine-tune runs and from which step."""

    run_dir: Path
    spec: FinetuneSpec
    context: distributed.Context
    start: int
    skipped_before: list[tuple[str, str]]  # what the checkpoint resumed from had met (the run's earlier part)


def _train(model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float],
           batches: Callable[[int], Iterable[dict[str, Any]]], run: _Run, last_good: Path | None) -> FinetuneResult:
    """The loop: forward (bf16 autocast where the precision says) → backward → step; at log and checkpoint steps
    the host sync (non-finite loss, stop agreement), the metrics line and the checkpoint."""
    spec, context = run.spec, run.context
    wrapped = distributed.wrap_for_training(model, context)
    wrapped.train()
    use_bf16 = uses_bf16(context.device, spec.precision)
    watch, stop = LossWatch(context.device), StopSignal()
    metrics = MetricsLog(run.run_dir, enabled=context.is_main, loggers=spec.loggers)
    result = FinetuneResult(run.run_dir, run.start, finished=False, skipped=list(run.skipped_before))
    bar = progress(total=spec.iterations, initial=run.start, desc=spec.description, enabled=context.is_main,
                   leave=False)
    step = run.start
    with bar, contextlib.closing(metrics), stop.installed():
        for batch in batches(run.start):
            if step >= spec.iterations:
                break
            if "error" in batch:  # data that stops the run, found by a loader worker: a one-line error, raised here
                raise DataError(batch["error"])
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                losses = loss_fn(wrapped, to_device(batch, context.device))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            step += 1
            watch.add(losses, step)
            # (item, reason) pairs: a DataLoader hands tuples on as lists, which cannot be counted in a set
            result.skipped.extend((str(item), str(reason)) for item, reason in batch.get("skipped", []))
            bar.update(1)
            log_step = step % spec.log_every == 0 or step == spec.iterations
            save = step % spec.checkpoint_every == 0 or step == spec.iterations
            if not (log_step or save or (context.world_size == 1 and stop.requested)):
                continue
            agreed = watch.agree(stop)
            if agreed.non_finite is not None:
                raise VitoError(f"{run.run_dir}: {non_finite_message(agreed.non_finite, last_good, NON_FINITE_ADVICE)}")
            result.last_loss = agreed.loss
            if log_step:
                metrics.write({"step": step, "lr": lr, **agreed.values}, last_good)
            if save or agreed.stopped_by:
                result.skipped = _distinct(distributed.gather_objects(result.skipped))  # every process's, once
                last_good = _save(model, optimizer, step, run, last_good, result.skipped)
            if agreed.stopped_by:
                result.stopped_by = agreed.stopped_by
                break
    result.step, result.finished = step, step >= spec.iterations
    return result


def _save(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, run: _Run, last_good: Path | None,
          skipped: list[tuple[str, str]]) -> Path | None:
    """A checkpoint of step ``step`` (the main process writes it), never from non-finite weights. It keeps the
    training items skipped so far: a Result made from a resumed or reused run must still count them."""
    if not finite_weights(model):
        what = f"the weights became non-finite by step {step}"
        raise VitoError(f"{run.run_dir}: {non_finite_message(what, last_good, NON_FINITE_ADVICE)}")
    if not run.context.is_main:
        return last_good
    state = {"format": run.spec.format, "step": step, "config": _plain(run.spec.config), "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng_state(), "skipped": [list(pair) for pair in skipped]}
    return save_checkpoint(run.run_dir, state, keep=run.spec.keep_checkpoints)


def _saved_skipped(state: dict[str, Any]) -> list[tuple[str, str]]:
    """The (item, reason) pairs a checkpoint recorded (none in checkpoints written before it kept them)."""
    return [(str(item), str(reason)) for item, reason in state.get("skipped", [])]


def _distinct(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each (item, reason) pair once, in first-seen order."""
    return list(dict.fromkeys((str(item), str(reason)) for item, reason in pairs))


def _existing(run_dir: Path, config: dict[str, Any], spec: FinetuneSpec, overwrite: bool) -> dict[str, Any] | None:
    """The newest checkpoint of a run with the same config in ``run_dir``; a different config is refused."""
    if overwrite or not holds_run(run_dir):
        return None
    saved_file = run_dir / CONFIG_FILE
    saved = read_yaml(saved_file) if saved_file.is_file() else None
    if saved != config:
        diff = sorted(k for k in set(saved or {}) | set(config) if (saved or {}).get(k) != config.get(k))
        raise VitoError(f"{run_dir} holds a {spec.description} with different settings ({', '.join(diff) or 'none'}"
                        "); use --overwrite to replace it or choose another --out")
    if not has_checkpoint(run_dir):
        return None
    state = load_checkpoint(run_dir, expected_format=spec.format)
    return state if state.get("config") == config else None


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts, lists and tuples moved to ``device`` (other values as they are)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
