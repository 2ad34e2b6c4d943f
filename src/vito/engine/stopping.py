"""Why a training run stops before its last step, agreed by every process, and what it says when it does.

Two reasons, one mechanism for every loop (pretraining and the fine-tunes):

* a stop request (``signals.StopSignal``): the run finishes the step, writes a checkpoint and exits;
* a non-finite loss or non-finite weights: the run stops with one line naming the last good checkpoint, and never
  writes a checkpoint from non-finite weights.

Why the loss is watched on the device: reading it with ``float()`` every step makes the host wait for the device
each step (and, with several processes, for an all-reduce), so the host cannot queue the next step ahead.
:class:`LossWatch` keeps the last values and the first non-finite loss on the device; the loop calls
:meth:`LossWatch.agree` at its sync points only (log and checkpoint steps, and at once in a single process asked
to stop): one all-reduce and one read of a few numbers, after which every process knows the same loss, whether
any process saw a non-finite loss, and which stop signal any process received, so all stop after the same step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from vito.engine import distributed, signals
from vito.engine.signals import StopSignal


@dataclass(frozen=True)
class Agreement:
    """What every process knows after a sync point."""

    values: dict[str, float]  # the last step's watched values (``"loss"`` first), mean over processes
    non_finite: str | None  # what went wrong when a loss on any process was non-finite, else None
    stopped_by: str | None  # the stop signal any process received ("SIGTERM"...), else None

    @property
    def loss(self) -> float:
        return self.values["loss"]


class LossWatch:
    """The losses of the steps between sync points, kept on the device: the last values and the first non-finite
    ``"loss"``. :meth:`add` only queues device operations; :meth:`agree` is the sync."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=device)}
        self.first_bad = torch.zeros((), device=device)  # 1-based step of the first non-finite loss; 0: none
        self.bad_value = torch.zeros((), device=device)

    def add(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        """The values of step ``step`` (1-based: the number of steps done); ``values["loss"]`` is watched."""
        self.last = {"loss": values["loss"].detach().float(),
                     **{name: value.detach().float() for name, value in values.items() if name != "loss"}}
        new = (self.first_bad == 0) & ~torch.isfinite(self.last["loss"])
        self.first_bad = torch.where(new, float(step), self.first_bad)
        self.bad_value = torch.where(new, self.last["loss"], self.bad_value)

    def agree(self, stop: StopSignal) -> Agreement:
        """Mean values over processes, whether any process saw a non-finite loss, and any stop signal received."""
        names = list(self.last)
        shared = torch.cat([*(self.last[name].reshape(1) for name in names),
                            (self.first_bad > 0).float().reshape(1), stop_flags(stop, self.device)])
        shared = distributed.mean_over_processes(shared)
        numbers = torch.cat([shared, self.first_bad.reshape(1), self.bad_value.reshape(1)]).tolist()
        values, any_bad = dict(zip(names, numbers)), numbers[len(names)]
        flags, first_bad, bad_value = numbers[len(names) + 1:-2], numbers[-2], numbers[-1]
        bad = None
        if any_bad > 0:
            bad = (f"the loss became {bad_value} at step {int(first_bad)}" if first_bad > 0
                   else "the loss became non-finite on another process")
        return Agreement(values, bad, stopped_by(flags))


def stop_flags(stop: StopSignal, device: torch.device) -> torch.Tensor:
    """1.0 for the stop signal this process received, per ``signals.stop_signals()`` (averaged over processes)."""
    return torch.tensor([float(stop.name == signum.name) for signum in signals.stop_signals()], device=device)


def stopped_by(flags: list[float]) -> str | None:
    """The first stop signal any process received, from the averaged flags."""
    names = [signum.name for signum, v in zip(signals.stop_signals(), flags) if v > 0]
    return names[0] if names else None


def finite_weights(model: torch.nn.Module) -> bool:
    """All floating-point parameters and buffers finite (one host read): checked before every checkpoint."""
    tensors = [v for v in model.state_dict().values() if v.is_floating_point()]
    return bool(torch.stack([torch.isfinite(v).all() for v in tensors]).all())


def stopped_with(last_good: Path | None) -> str:
    """What a run that stops on an error leaves behind, for its message."""
    return (f"training stopped and the last good checkpoint is {last_good} (left untouched)" if last_good
            else "training stopped and no checkpoint was written yet")


def non_finite_message(what: str, last_good: Path | None, advice: str) -> str:
    """``what`` went non-finite (see :meth:`LossWatch.agree`), what is left, and what to change (``advice``)."""
    return f"{what}: {stopped_with(last_good)}. {advice}"
