"""The pre-scan: which raw videos (or still images) are usable, decided once per run, before training.

Every raw video is opened, checked for truncation and its first frame decoded (``probe_clip``; an image is
decoded whole, at a small size), split across
processes and across the ranks of a distributed run, so every process gets the same answer. The answer is kept
in the run folder (``save_scan``) and read back by every resume (``cached_scan``): a file fixed or broken since
the first start cannot change a resumed run's batches. Shards are usable by construction and not probed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch.distributed as dist

from vito.data.sources import ClipSource, located_reason, source_media
from vito.data.stream import one_thread
from vito.engine.distributed import gather_objects
from vito.errors import DataError
from vito.io import write_json

log = logging.getLogger(__name__)

SCAN_NAME = "video_scan.json"  # the pre-scan's answer, kept in the run folder (see cached_scan)
SCAN_FORMAT = "vito-scan/1"
PROBE_SHORT_SIDE = 32  # the pre-scan decodes each video's first frame at this short side (cheap)


def probe_clip(source: ClipSource, i: int) -> str | None:
    """None if clip ``i`` opens, passes the truncation check and decodes its first frame; else the reason."""
    try:
        source.read_clip(i, lambda duration: np.zeros(1), PROBE_SHORT_SIDE)
        return None
    except DataError as exc:
        return located_reason(source, i, str(exc))


def scan_source(source: ClipSource, workers: int = 0, rank: int = 0, world_size: int = 1) -> dict[int, str]:
    """Every clip of the source probed (``probe_clip``): ``{index: reason}`` of the unusable ones.

    Split across ``workers`` processes, and across the ``world_size`` processes of a torch.distributed
    group (each probes every ``world_size``-th clip, then all exchange results), so every process gets the
    same answer. A source with ``usable_by_construction`` (shards) is not probed. DataError when no clip
    is usable.
    """
    if getattr(source, "usable_by_construction", False):
        return {}
    shared = world_size > 1 and dist.is_available() and dist.is_initialized() and dist.get_world_size() == world_size
    mine = list(range(rank, len(source), world_size)) if shared else list(range(len(source)))
    failed = {i: reason for i, reason in zip(mine, _probe_all(source, mine, workers)) if reason is not None}
    if shared:
        failed = dict(gather_objects(list(failed.items())))
    if len(failed) == len(source):
        raise DataError(no_usable_message(len(source), [failed[i] for i in sorted(failed)], source_media(source)))
    return failed


def _probe_all(source: ClipSource, indices: list[int], workers: int) -> list[str | None]:
    """``probe_clip`` of each index, in ``workers`` processes (a crashing decoder fails the scan, never hangs it).

    The workers are spawned, not forked: a fork copies the parent's thread pools without their threads (FFmpeg's
    scaler pool hung forked loader workers in CI, see ``vito.data.video._reformatter``), and a pool started late
    in a long process (a test session, a notebook) should not depend on what ran before. A spawned worker starts
    clean, for about a second of imports, once per run.
    """
    if workers <= 0 or len(indices) < 2 * workers:
        return [probe_clip(source, i) for i in indices]
    chunk = max(1, min(16, len(indices) // (4 * workers)))
    try:
        with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _probe_worker, (source,)) as pool:
            return list(pool.map(_probe_in_worker, indices, chunksize=chunk))
    except BrokenProcessPool:
        raise DataError("a pre-scan worker died while probing the videos (a file crashed the decoder?); "
                        "run with data.num_workers=0 to find it") from None


_WORKER_SOURCE: ClipSource | None = None  # the source a pre-scan worker process probes (set once per process)


def _probe_worker(source: ClipSource) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    one_thread()


def _probe_in_worker(i: int) -> str | None:
    assert _WORKER_SOURCE is not None
    return probe_clip(_WORKER_SOURCE, i)


def cached_scan(source: ClipSource, cache: Path | None, workers: int = 0, rank: int = 0,
                world_size: int = 1) -> dict[int, str]:
    """``scan_source``, or the answer saved in the run folder ``cache`` (``SCAN_NAME``, see ``save_scan``).

    Why a cache: a resumed run must use the very answer of its first start (a file fixed or broken since
    would otherwise change the batches). It holds for the same list of files; a changed list is scanned
    again (with a warning). Every process of a group takes the same branch.
    """
    names = [source.name(i) for i in range(len(source))]
    failed = _read_scan(cache / SCAN_NAME, names) if cache is not None else None
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        failed = failed if all(gather_objects([failed is not None])) else None
    if failed is None:
        return scan_source(source, workers, rank, world_size)
    if len(failed) == len(source):
        raise DataError(no_usable_message(len(source), [failed[i] for i in sorted(failed)], source_media(source)))
    return failed


def save_scan(folder: Path, source: ClipSource, unusable: dict[int, str]) -> None:
    """Keep the pre-scan's answer in the run folder (written once the run owns it: never before)."""
    names = [source.name(i) for i in range(len(source))]
    write_json(folder / SCAN_NAME, {"format": SCAN_FORMAT, "files": names,
                                    "unusable": {str(i): reason for i, reason in sorted(unusable.items())}})


def _read_scan(path: Path, names: list[str]) -> dict[int, str] | None:
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_bytes())
        if saved.get("format") == SCAN_FORMAT and saved.get("files") == names:
            return {int(i): str(reason) for i, reason in saved["unusable"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    log.warning("%s does not describe these %d files: scanning them again", path, len(names))
    return None


def no_usable_message(total: int, reasons: Sequence[str], media: str = "videos") -> str:
    shown = "; ".join(reasons[:5]) + (f"; ... ({len(reasons) - 5} more)" if len(reasons) > 5 else "")
    return f"no usable {media[:-1]} among {total} files: {shown}"
