"""The calls the launcher tests submit as jobs. A job process unpickles its call by module name, so they live in a
module imported as ``tests.report.launch.job_calls`` (pytest imports test modules under other names)."""

from __future__ import annotations

from pathlib import Path


def crash() -> None:
    raise RuntimeError("the node ran out of luck")


def join_process_group(folder: Path) -> None:
    """Join the job's process group as a pretraining run does, average the ranks, and say what each process saw."""
    import json

    import torch

    from vito.engine import distributed

    context = distributed.setup("cpu")
    try:
        mean = distributed.mean_over_processes(torch.tensor([float(context.rank)]))
    finally:
        distributed.cleanup()
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"rank{context.rank}.json").write_text(json.dumps(
        {"rank": context.rank, "local_rank": context.local_rank, "world_size": context.world_size,
         "mean_rank": float(mean)}))
