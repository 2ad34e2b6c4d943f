"""The files every training run keeps in its folder: ``config.yaml`` (what the run is) and its metrics log,
``metrics.jsonl`` (one JSON object per logged step) with the same numbers in TensorBoard (``tb/``).

One writer for pretraining and the fine-tunes. On resume the lines logged after the checkpoint are dropped
(those steps are redone and logged again), so a resumed run's log equals an uninterrupted one's. Every failure
to write is one line naming the file: before the first step (:func:`start_run_files`), or at a logged step
with the last good checkpoint (:meth:`MetricsLog.write`: a full disk stops the run with the checkpoint it has).
Only the main process writes; the others hold a disabled log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vito.engine.loggers import open_sinks, scalar_values
from vito.engine.stopping import stopped_with
from vito.errors import VitoError
from vito.io import atomic_write
from vito.schema import dump_yaml

CONFIG_FILE, METRICS_FILE, TENSORBOARD_DIR = "config.yaml", "metrics.jsonl", "tb"


def start_run_files(run_dir: Path, config: dict[str, Any], start_step: int, sort_keys: bool = False) -> list[str]:
    """Write the run's ``config.yaml``; keep the metrics logged up to ``start_step`` (none for a fresh run).
    Returns notes for the run's log (lines of ``metrics.jsonl`` that could not be read and were dropped).
    A full or read-only disk is a ``VitoError`` naming the file, before any step."""
    try:
        return _write_run_files(run_dir, config, start_step, sort_keys)
    except OSError as error:
        raise VitoError(f"could not write the run's files in {run_dir}: {error.strerror or error} "
                        f"({getattr(error, 'filename', None) or run_dir})") from error


def _write_run_files(run_dir: Path, config: dict[str, Any], start_step: int, sort_keys: bool) -> list[str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / CONFIG_FILE) as handle:
        dump_yaml(config, handle, sort_keys=sort_keys)
    metrics = run_dir / METRICS_FILE
    kept, notes = [], []
    if start_step > 0 and metrics.is_file():
        kept, notes = _records_up_to(metrics, start_step)
    with atomic_write(metrics) as handle:
        handle.writelines(line + "\n" for line in kept)
    return notes


def _records_up_to(metrics: Path, step: int) -> tuple[list[str], list[str]]:
    """The lines of ``metrics`` logged up to ``step``, and notes on the lines that could not be read.

    Why tolerate them: a full disk or a kill during an append leaves a cut-off last line, exactly what the
    documented recovery (free space, ``--resume``) meets next; the checkpoint is whole, and a dropped record is
    only a figure in a log.
    """
    kept, broken = [], []
    for number, line in enumerate(metrics.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            logged_at = record.get("step", 0) if isinstance(record, dict) else None
        except ValueError:
            logged_at = None
        if logged_at is None:
            broken.append(number)
        elif logged_at <= step:
            kept.append(line)
    notes = [f"{metrics}: dropped {len(broken)} line(s) that are not a whole record (line {', '.join(map(str, broken))}"
             "; a write cut off by a full disk or a kill)"] if broken else []
    return kept, notes


class MetricsLog:
    """Appends records ``{"step": s, name: number...}`` to ``metrics.jsonl`` and to the ``loggers`` (TensorBoard,
    W&B, MLflow: ``vito.engine.loggers``) as ``train/NAME``, or ``NAME`` when it holds a ``/``. Disabled
    (``enabled=False``, the processes other than the main one): writes nothing, opens nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True, loggers: list[str] | tuple[str, ...] = ("tensorboard",)
                 ) -> None:
        self.path, self.enabled = Path(run_dir) / METRICS_FILE, enabled
        self._sinks = open_sinks(Path(run_dir), loggers) if enabled else []

    def write(self, record: dict[str, Any], last_good: Path | None) -> None:
        """Log ``record``; a failed write stops the run with a ``VitoError`` naming the file and ``last_good``."""
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise VitoError(f"could not write {self.path} at step {record['step']}: {error.strerror or error}; "
                            f"{stopped_with(last_good)}") from error
        for sink in self._sinks:
            sink.log(scalar_values(record), record["step"])

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
