"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one ``torch.save`` of plain tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(weights_only=True)`` — no pickled objects, nothing executed on load. It holds the model (online,
predictor and target), the optimizer, the random number generators and the resolved config; the data
batches need no state because the batch of step ``s`` is a pure function of ``(seed, s, rank)``.

Writes are atomic (``vito.io.atomic_write``): a job killed mid-save leaves the previous ``last.pt`` intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vito.config import Config, ConfigError, config_from_dict, load_config
from vito.errors import VitoError
from vito.io import atomic_write

FORMAT = "vito-checkpoint/1"
LAST = "last.pt"

# Keys that may change when a run is resumed: how long to train and how to log, never what is trained.
RESUMABLE_KEYS = frozenset(
    {
        "train.max_steps",
        "train.checkpoint_every",
        "train.log_every",
        "train.compile",
        "train.device",
        "data.num_workers",
    }
)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep_step_copy: bool = True) -> Path:
    """Atomically write ``state`` to ``RUN_DIR/checkpoints/last.pt`` (and a ``step_XXXXXXX.pt`` copy).

    The step copy is a hard link to the same file, so it costs no space until ``last.pt`` moves on.
    """
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint state must carry format {FORMAT!r}")
    folder = checkpoint_dir(run_dir)
    last = folder / LAST
    with atomic_write(last, mode="wb") as handle:
        torch.save(state, handle)
    if keep_step_copy:
        step_file = folder / f"step_{state['step']:07d}.pt"
        step_file.unlink(missing_ok=True)
        try:
            os.link(last, step_file)
        except OSError:  # file systems without hard links: keep only last.pt
            pass
    return last


def find_checkpoint(run_dir_or_file: str | Path) -> Path:
    """``RUN_DIR`` → ``RUN_DIR/checkpoints/last.pt``; a file is returned as it is."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = checkpoint_dir(path) / LAST
    if not path.is_file():
        raise VitoError(f"no checkpoint at {path} (expected a run folder or a .pt checkpoint file)")
    return path


def load_checkpoint(run_dir_or_file: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check its format."""
    path = find_checkpoint(run_dir_or_file)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise VitoError(f"{path} is not a readable vito checkpoint: {error}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise VitoError(f"{path} is not a vito checkpoint (expected format {FORMAT!r})")
    state["path"] = str(path)
    return state


# --------------------------------------------------------------------------------------------------
# Random number generators, stored as tensors and lists so that weights_only loading accepts them


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Config on resume


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The run's saved ``config.yaml`` with ``overrides``; only :data:`RESUMABLE_KEYS` may change."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise VitoError(f"{run_dir} is not a vito run folder: {path} is missing")
    saved = config_from_dict(yaml.safe_load(path.read_text()))
    config = load_config(path, overrides)
    check_resumable(saved.to_dict(), config.to_dict())
    return config


def check_resumable(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key outside :data:`RESUMABLE_KEYS` whose value differs."""
    for key, (old_value, new_value) in sorted(_flat_diff(saved, new).items()):
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"{key} cannot change when resuming ({old_value!r} -> {new_value!r}); "
                f"only {', '.join(sorted(RESUMABLE_KEYS))} may. Start a new run instead."
            )


def _flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    diff: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            diff.update(_flat_diff(left, right, f"{prefix}{key}."))
        elif left != right:
            diff[prefix + key] = (left, right)
    return diff
