"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one ``torch.save`` of plain tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(weights_only=True)`` — no pickled objects, nothing executed on load. It holds the model (online,
predictor and target), the optimizer, the random number generators and the resolved config; the data
batches need no state because the batch of step ``s`` is a pure function of ``(seed, s, rank)``.

Writes are atomic (``vito.io.atomic_write``): a job killed mid-save leaves the previous ``last.pt`` intact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vito.errors import VitoError
from vito.io import atomic_write
from vito.tensor_files import UnreadableTensorFile, load_tensor_file

FORMAT = "vito-checkpoint/1"
LAST = "last.pt"

log = logging.getLogger(__name__)

def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run folder holds a checkpoint file (intact or not). A run killed before or while writing its
    first one holds none (an interrupted atomic write leaves only a temporary file): it starts again from step 0."""
    folder = checkpoint_dir(run_dir)
    return folder.is_dir() and any(path.suffix == ".pt" for path in folder.iterdir())


def step_file(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:07d}.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int = 0, keep_step_copy: bool = True) -> Path:
    """Atomically write ``state`` to ``RUN_DIR/checkpoints/last.pt`` (and a ``step_XXXXXXX.pt`` copy).

    The step copy is a hard link to the same file, so it costs no space until ``last.pt`` moves on. ``keep`` > 0
    keeps only the newest ``keep`` step copies up to this step (0: all). A failed write (a full disk) leaves
    the previous ``last.pt`` and no temporary file behind, and says so.
    """
    if not isinstance(state.get("format"), str) or not isinstance(state.get("step"), int):
        raise ValueError("checkpoint state must carry a format name (e.g. 'vito-checkpoint/1') and an int step")
    folder = checkpoint_dir(run_dir)
    last = folder / LAST
    try:
        with atomic_write(last, mode="wb") as handle:
            torch.save(state, handle)
    except (OSError, RuntimeError) as error:
        # torch.save reports a failed write (a full disk) as a RuntimeError raised while handling the OSError
        error = error if isinstance(error, OSError) else error.__context__
        if not isinstance(error, OSError):
            raise
        previous = f"the last good checkpoint is {last} (left untouched)" if last.is_file() else \
            "no checkpoint was written before"
        raise VitoError(f"could not write the checkpoint of step {state['step']} to {last}: "
                        f"{error.strerror or error}; {previous}") from error
    if keep_step_copy:
        copy = step_file(run_dir, state["step"])
        copy.unlink(missing_ok=True)
        try:
            os.link(last, copy)
        except OSError:  # file systems without hard links: keep only last.pt
            pass
        if keep > 0:
            _prune(folder, state["step"], keep)
    return last


def _step_files(folder: Path) -> dict[int, Path]:
    """step -> step_XXXXXXX.pt in ``folder``."""
    files = {}
    for path in folder.glob("step_*.pt"):
        number = path.stem.removeprefix("step_")
        if number.isdigit():
            files[int(number)] = path
    return files


def _prune(folder: Path, step: int, keep: int) -> None:
    """Delete all but the newest ``keep`` step copies at or before ``step``.

    Copies after ``step`` (left by a run resumed from an older checkpoint) are not judged here: that run
    replaces them when it gets there.
    """
    files = _step_files(folder)
    older = sorted(s for s in files if s <= step)
    for old in older[:-keep]:
        files[old].unlink(missing_ok=True)


def load_checkpoint(run_dir_or_file: str | Path, expected_format: str = FORMAT) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check its format.

    A run folder gives its newest *intact* checkpoint: ``last.pt``, or, when that is empty or corrupt (an
    in-place corruption also hits the newest step copy, its hard link), the newest step copy that reads,
    with a warning; ``state["fallback"]`` then lists the unreadable files. A file is read as it is.
    """
    path = Path(run_dir_or_file)
    if not path.is_dir():
        if not path.is_file():
            raise VitoError(f"no checkpoint at {path} (expected a run folder or a .pt checkpoint file)")
        return _checked(_read(path), path, expected_format)
    folder = checkpoint_dir(path)
    candidates = [folder / LAST] + [p for _, p in sorted(_step_files(folder).items(), reverse=True)]
    candidates = [p for p in candidates if p.is_file()]
    if not candidates:
        raise VitoError(f"no checkpoint at {folder / LAST} (expected a run folder or a .pt checkpoint file)")
    unreadable: list[str] = []
    for candidate in candidates:
        try:
            state = _read(candidate)
        except CorruptCheckpoint as error:
            unreadable.append(str(error))
            continue
        state = _checked(state, candidate, expected_format)
        if unreadable:
            state["fallback"] = unreadable
            log.warning("%s; using %s (step %s), the newest intact checkpoint", "; ".join(unreadable), candidate,
                        state.get("step"))
        return state
    raise VitoError(f"no intact checkpoint in {folder}: {'; '.join(unreadable)}")


class CorruptCheckpoint(VitoError):
    """A checkpoint file that cannot be read at all (empty, truncated, overwritten)."""


def _read(path: Path) -> Any:
    try:
        return load_tensor_file(path, "checkpoint")
    except UnreadableTensorFile as error:
        raise CorruptCheckpoint(str(error)) from error


def _checked(state: Any, path: Path, expected_format: str) -> dict[str, Any]:
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise VitoError(f"{path} is not a vito checkpoint of format {expected_format!r} (found {found!r})")
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


def seed_all(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators: a fine-tune then starts from the same state in
    every process it runs in, so a resumed one (which restores them) ends where one never stopped does.
    (numpy's global generator is seeded from OS entropy at import otherwise.)"""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
