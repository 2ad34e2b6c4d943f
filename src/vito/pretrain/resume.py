"""Continuing a pretraining run: which folder and checkpoint, with which config and data.

A run continues only as it trained: the saved ``config.yaml`` may change in :data:`RESUMABLE_KEYS` alone (how long
to train and how to log, never what is trained), ``--data`` must be the run's own data while that exists, and
every change a resume makes (a larger ``train.max_steps``, a key added to the config since the checkpoint, another
data path version) is reported in ``train.log``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vito.config import ADDED_KEYS, Config, ConfigError, load_config, with_added_keys
from vito.engine.checkpoint import has_checkpoint, load_checkpoint
from vito.errors import VitoError

# Keys that may change when a run is resumed: how long to train and how to log, never what is trained.
RESUMABLE_KEYS = frozenset(
    {
        "train.max_steps",
        "train.checkpoint_every",
        "train.log_every",
        "train.compile",
        "train.device",
        "data.num_workers",
        "data.decode_device",  # the same batches up to resize rounding (a resume reports the change)
        "train.keep_checkpoints",
        "train.stop_grace_seconds",
        "train.loggers",  # W&B and MLflow continue their run (its id is in the run folder) or start one
    }
)


def resume_target(run_dir_or_file: str | Path) -> tuple[Path, Path | None]:
    """``--resume`` argument -> (run folder, checkpoint file or None for the newest intact one).

    Accepts a run folder or one of its checkpoint files (``RUN/checkpoints/step_0004000.pt``).
    """
    path = Path(run_dir_or_file)
    if path.is_dir() or not path.exists():
        return path, None
    if path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").is_file():
        raise VitoError(f"--resume {path}: a checkpoint file to resume from must lie in RUN/checkpoints/ "
                        "of a run folder (with its config.yaml)")
    return path.parent.parent, path


def never_checkpointed(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> bool:
    """Whether ``run_dir`` holds this very run without a checkpoint: stopped (or killed) before or while writing
    its first one. Such a run starts again from step 0, as an uninterrupted run did, whether it is continued
    with ``--resume RUN`` or started again with the same ``--config``/``--data``/``--out`` (a requeue script's
    two branches); a different config is still refused."""
    saved = Path(run_dir) / "config.yaml"
    if overwrite or has_checkpoint(run_dir) or not saved.is_file():
        return False
    if resume:
        return True
    try:
        check_resumable(load_config(saved, saved_run=True).to_dict(), config.to_dict())
    except VitoError:  # another run's folder: the run folder's refusal says so
        return False
    return True


def resume_point(run_dir: Path, file: str | Path | None, config: Config, notes: list[str]) -> dict[str, Any]:
    """The checkpoint to continue from, checked against the config it continues with."""
    checkpoint = load_checkpoint(run_dir if file is None else file)
    notes.extend(f"{reason}: resuming from {checkpoint['path']} instead" for reason in checkpoint.get("fallback", []))
    saved, added = with_added_keys(checkpoint["config"])
    notes.extend(f"the checkpoint predates {key}: the run continues as it trained, {key}={value!r}"
                 for key, value in ((k, ADDED_KEYS[k]) for k in added))
    check_resumable(saved, config.to_dict())
    for key, (old, new) in sorted(config_changes(saved, config.to_dict()).items()):
        notes.append(f"on resume {key} changes from {old!r} to {new!r}")
    if config.train.max_steps <= checkpoint["step"]:
        raise VitoError(f"{checkpoint['path']} is at step {checkpoint['step']} already: train.max_steps="
                        f"{config.train.max_steps} leaves nothing to do; continue with a larger --max-steps")
    return checkpoint


def data_path(data: str | Path | None, checkpoint: dict[str, Any] | None, notes: list[str]) -> Path:
    """The data to train on, absolute (a resume works from any folder); on resume the run's own data.

    A ``--data`` on resume that differs from the run's is refused while the run's data still exists (a
    different dataset is a different run), and reported when it does not (the data moved).
    """
    if data is None:
        if checkpoint is None:
            raise VitoError("no training data given (--data; a run stopped before its first checkpoint has not "
                            "recorded its data: give it again)")
        return Path(checkpoint["data_path"])
    data = Path(os.path.abspath(data))
    if checkpoint is not None:
        stored = Path(checkpoint["data_path"])
        if os.path.realpath(stored) != os.path.realpath(data):
            if stored.exists():
                raise VitoError(f"--data {data} is not the data of this run ({stored}); resume without --data to "
                                "continue on the run's data, or start a new run (--out) on other data")
            notes.append(f"the run's data {stored} no longer exists: continuing on --data {data}")
    return data


def note_data_path_change(checkpoint: dict[str, Any], version: str, notes: list[str]) -> None:
    """A resume whose batches are made another way than the checkpoint's (docs/data_path.md): reported."""
    stored = checkpoint.get("data_path_version", "cpu-torchvision/1")  # checkpoints before versions
    if stored != version:
        notes.append(f"the checkpoint's batches were made by data path {stored}, this run uses {version}: "
                     "the same clips, times, crop boxes and flips, resized differently (under 2/255 per view "
                     "on average; `vito docs data_path`), so the run continues but does not repeat the original "
                     "bit for bit")


# --------------------------------------------------------------------------------------------------
# Config on resume


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  config: str | Path | None = None) -> Config:
    """The run's saved ``config.yaml`` with ``overrides``; only :data:`RESUMABLE_KEYS` may change.

    ``config`` (a ``--config`` given on resume) is checked against the run's: it may differ only in those keys
    too (and then is what the run continues with), never silently ignored.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise VitoError(f"{run_dir} is not a vito run folder: {path} is missing")
    saved = load_config(path, saved_run=True)
    resumed = load_config(path if config is None else config, overrides, saved_run=config is None)
    try:
        check_resumable(saved.to_dict(), resumed.to_dict())
    except ConfigError as error:
        if config is None:
            raise
        raise ConfigError(f"--config {config} is not the config of the run in {run_dir}: {error}") from error
    return resumed


def check_resumable(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key outside :data:`RESUMABLE_KEYS` whose value differs."""
    for key, (old_value, new_value) in sorted(_flat_diff(saved, new).items()):
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"{key} cannot change when resuming ({old_value!r} -> {new_value!r}); "
                f"only {', '.join(sorted(RESUMABLE_KEYS))} may. Start a new run instead."
            )


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (old, new)`` for every value that differs (on resume: only resumable keys, as checked)."""
    return _flat_diff(saved, new)


def _flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    diff: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            diff.update(_flat_diff(left, right, f"{prefix}{key}."))
        elif left != right:
            diff[prefix + key] = (left, right)
    return diff
