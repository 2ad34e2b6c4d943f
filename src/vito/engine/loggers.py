"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard (always installed), Weights & Biases and
MLflow (optional extras, ``pip install 'vito[wandb]'`` / ``'vito[mlflow]'``).

Each sink is ``log(values, step)`` + ``close()``, fed by the one metrics writer (``run_files.MetricsLog``).
A resumed run continues the same W&B run and the same MLflow run: their ids are kept in the run folder
(``loggers.json``) when first made and reused, so the curves of a preempted run are one curve. Where they write:
W&B follows its own settings (``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``; without ``WANDB_DIR`` the files go
into the run folder), MLflow its own (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``; experiment ``vito``).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from vito.errors import VitoError
from vito.io import atomic_write

LOGGERS = ("tensorboard", "wandb", "mlflow")
IDS_FILE = "loggers.json"
_EXTRA_MODULE = {"wandb": "wandb", "mlflow": "mlflow"}


@dataclass
class LoggerSettings:
    """The ``--loggers`` option of every fine-tuning evaluation: one field, inherited by their settings. It says
    where metrics go, never what is computed (``vito report`` does not recompute a cell for it)."""

    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["tensorboard"], kw_only=True,
        metadata={"help": "where the fine-tunes' metrics go besides metrics.jsonl: tensorboard, wandb, mlflow "
                          "(the last two: pip install 'vito[wandb]' / 'vito[mlflow]')"})


class Sink(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def check_names(names: list[str] | tuple[str, ...], key: str) -> None:
    """Refuse an unknown logger name (a one-line error naming ``key`` and the known ones)."""
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise VitoError(f"{key}: unknown logger(s) {', '.join(map(repr, unknown))}; choose from {', '.join(LOGGERS)}")


def require(name: str) -> ModuleType:
    """The optional package behind logger ``name``, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(_EXTRA_MODULE[name])
    except ImportError as error:
        raise VitoError(f"logger {name!r} needs the optional package {_EXTRA_MODULE[name]}, which is not "
                        f"installed: pip install 'vito[{name}]'") from error


def check_installed(names: list[str] | tuple[str, ...]) -> None:
    """Every optional package the loggers ``names`` need is there: called before a run touches its folder."""
    for name in dict.fromkeys(names):
        if name in _EXTRA_MODULE:
            require(name)


def open_sinks(run_dir: Path, names: list[str] | tuple[str, ...]) -> list[Sink]:
    """One sink per name (each at most once), every optional package imported before any is opened."""
    names = list(dict.fromkeys(names))
    check_names(names, "loggers")
    modules = {name: require(name) for name in names if name in _EXTRA_MODULE}
    makers = {"tensorboard": lambda: TensorBoardSink(run_dir),
              "wandb": lambda: WandbSink(run_dir, modules["wandb"]),
              "mlflow": lambda: MlflowSink(run_dir, modules["mlflow"])}
    return [makers[name]() for name in names]


def _saved_id(run_dir: Path, name: str) -> str | None:
    path = Path(run_dir) / IDS_FILE
    try:
        value = json.loads(path.read_text()).get(name) if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) else None


def _save_id(run_dir: Path, name: str, run_id: str) -> None:
    path = Path(run_dir) / IDS_FILE
    try:
        ids = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        ids = {}
    ids = ids if isinstance(ids, dict) else {}
    ids[name] = run_id
    with atomic_write(path) as handle:
        json.dump(ids, handle, indent=1, sort_keys=True)


class TensorBoardSink:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from vito.engine.run_files import TENSORBOARD_DIR
        self._writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """One W&B run per run folder: its id is made once, stored, and given back with ``resume="allow"``."""

    def __init__(self, run_dir: Path, wandb: ModuleType) -> None:
        run_id = _saved_id(run_dir, "wandb") or secrets.token_hex(4)  # W&B ids: [a-z0-9]
        _save_id(run_dir, "wandb", run_id)
        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(run_dir)}
        self._run = wandb.init(id=run_id, resume="allow", name=Path(run_dir).name,
                               project=os.environ.get("WANDB_PROJECT", "vito"), **where)

    def log(self, values: dict[str, float], step: int) -> None:
        self._run.log(dict(values), step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    """One MLflow run per run folder (experiment ``vito``), through a client of its own: no global active run."""

    def __init__(self, run_dir: Path, mlflow: ModuleType) -> None:
        self._client, self._entities = mlflow.tracking.MlflowClient(), mlflow.entities  # MLflow's own tracking URI
        run_id = _saved_id(run_dir, "mlflow")
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vito")
            experiment = self._client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
            run_id = self._client.create_run(experiment_id, run_name=Path(run_dir).name).info.run_id
            _save_id(run_dir, "mlflow", run_id)
        else:
            self._client.update_run(run_id, status="RUNNING")
        self._run_id = run_id

    def log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._entities.Metric(key, float(value), now, step) for key, value in values.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


def scalar_values(record: dict[str, Any]) -> dict[str, float]:
    """A metrics record's numbers under their logged names: ``train/NAME``, or ``NAME`` when it holds a ``/``."""
    return {key if "/" in key else f"train/{key}": value for key, value in record.items() if key != "step"}
