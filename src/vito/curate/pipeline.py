"""VideoNet curation run (paper §3.2): candidates -> title match -> per-class cap -> duration -> classifier.

The run is built for millions of candidates on many processes and for being killed at any moment:
- every process reads the same candidate list and computes the same *plan* (title matches and the
  per-class cap are cheap, global and deterministic), then handles the candidates ``i % world_size == rank``;
- each result is appended to ``OUT/parts/rank-XXXXX.jsonl`` and fsync'ed before the next video starts, so a
  crash loses at most the video in flight; a partial last line is ignored (and cut off before appending);
- a rerun (any number of ranks) skips every candidate already recorded in any part file;
- the process that finds every candidate recorded merges the parts into ``accepted.jsonl``,
  ``rejected.jsonl``, ``summary.json`` and ``class_distribution.png`` (deterministic, written atomically,
  so several ranks merging at once write identical files).

Rules that the paper leaves open, fixed here:
- the per-class cap (5,000 as in the paper's "we retrieved 5,000 video clips" per class) applies at
  retrieval, in candidate-file order: a video takes a slot in every class it names that still has room and
  is dropped as ``class_cap`` if none has; candidates repeating an earlier id are dropped as ``duplicate``;
- a ``duration`` column, when present, is trusted (web metadata) and spares opening the file for short ones;
- a video whose title names several classes is classified once and kept once, under the verified class
  with the highest best-frame probability (ties: lower class index), so no clip is trained on twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vito.curate.distribution import kl_to_uniform, plot_class_distribution
from vito.curate.filters import FrameClassifier, Preprocess, long_enough, verify
from vito.curate.lexicon import Lexicon, imagenet_lexicon
from vito.curate.records import RecordLog, read_parts
from vito.data.manifest import read_manifest
from vito.data.video import probe_video
from vito.engine.progress import progress as progress_of
from vito.errors import DataError, VitoError
from vito.io import atomic_write, read_json, write_json

REASONS = ("kept", "no_title_match", "duplicate", "class_cap", "unreadable", "too_short", "classifier_miss")


@dataclass(frozen=True)
class CurationSettings:
    min_duration: float = 10.0  # seconds (paper: "less than 10s" discarded)
    max_frames: int = 100  # first frames classified (paper: 100)
    class_cap: int = 5000  # videos retrieved per class (paper: 5,000)
    batch_size: int = 32  # frames per classifier forward pass
    image_size: int | None = None  # classifier crop; None = the model's own input size

    def __post_init__(self) -> None:
        """Refuse values that would reject every video for a wrong reason instead of failing: 0 frames makes
        each video "unreadable", a NaN minimum duration each "too_short", a cap below 1 each "class_cap"."""
        checks = [
            ("min_duration", math.isfinite(self.min_duration) and self.min_duration >= 0, "a number of seconds >= 0"),
            ("max_frames", self.max_frames >= 1, "at least 1"),
            ("class_cap", self.class_cap >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("image_size", self.image_size is None or self.image_size >= 1, "at least 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise VitoError(f"--{name.replace('_', '-')} must be {expected}, got {getattr(self, name)}")


@dataclass(frozen=True)
class Candidate:
    index: int  # row in the candidate file: the run's identity for a video
    id: str
    path: str  # resolved against the candidate file's folder
    title: str
    duration: float | None = None


@dataclass(frozen=True)
class Plan:
    """What the cheap, global stage decided for one candidate."""

    title_classes: list[int]
    retrieved_classes: list[int]  # title classes that still had room under the cap
    reason: str | None  # a rejection decided without opening the video, else None


# --------------------------------------------------------------------------------------------------
# Candidates and plan


def read_candidates(path: str | Path) -> list[Candidate]:
    """Rows of a CSV or JSONL file with ``path`` and ``title`` (optional ``id``, ``duration``).

    A missing file or column, a malformed row or an empty file is a ``DataError`` naming the line: the
    plan (cap, rank split) depends on every row, so a bad row cannot just be skipped by one rank.
    """
    return [
        Candidate(
            index=index,
            id=str(row.get("id") or row["path"]),
            path=row["path"],
            title=str(row["title"]),
            duration=_duration(row.get("duration"), f"{path}:{line}"),
        )
        for index, (line, row) in enumerate(read_manifest(path, required=("path", "title")).rows)
    ]


def _duration(value: Any, where: str) -> float | None:
    """The optional ``duration`` column in seconds (empty = unknown, so the file is probed)."""
    if value is None or str(value).strip() == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(f"{where}: duration {value!r} is not a number of seconds")
    return seconds


def plan_candidates(candidates: list[Candidate], lexicon: Lexicon, class_cap: int) -> list[Plan]:
    """Title matching, duplicate ids and the per-class cap, in candidate-file order."""
    room = np.full(len(lexicon), class_cap, dtype=np.int64)
    seen: set[str] = set()
    plans = []
    for candidate in candidates:
        classes = lexicon.classes_in(candidate.title)
        retrieved = [c for c in classes if room[c] > 0]
        if candidate.id in seen:
            plans.append(Plan(classes, [], "duplicate"))
            continue
        seen.add(candidate.id)
        if not classes:
            plans.append(Plan(classes, [], "no_title_match"))
        elif not retrieved:
            plans.append(Plan(classes, [], "class_cap"))
        else:
            room[retrieved] -= 1
            plans.append(Plan(classes, retrieved, None))
    return plans


# --------------------------------------------------------------------------------------------------
# Judging one video


def judge(candidate: Candidate, plan: Plan, classifier: FrameClassifier | None, settings: CurationSettings,
          lexicon: Lexicon) -> dict[str, Any]:
    """The record for one candidate: decision, reason, duration, best frame and its score."""
    record = _record(candidate, plan)
    if plan.reason is not None:
        return _reject(record, plan.reason)
    duration = candidate.duration
    if duration is None:
        try:
            duration = probe_video(candidate.path).duration
        except DataError as error:
            return _reject(record, "unreadable", error=str(error))
    record["duration"] = round(float(duration), 6)
    if not long_enough(duration, settings.min_duration):
        return _reject(record, "too_short")
    if classifier is None:
        raise ValueError("a classifier is needed for candidates that pass the title and duration filters")
    try:
        predictions = classifier.classify_video(candidate.path, settings.max_frames)
    except DataError as error:
        return _reject(record, "unreadable", error=str(error))
    if len(predictions) == 0:
        return _reject(record, "unreadable", error=f"{candidate.path}: no frame decoded")
    record["frames"] = len(predictions)
    verdicts = [verify(predictions, c) for c in plan.retrieved_classes]
    hits = [v for v in verdicts if v.hit]
    record["verified_classes"] = [v.class_index for v in hits]
    best = max(hits or verdicts, key=lambda v: (v.best_score, -v.class_index))
    record.update(best_frame=best.best_frame, best_score=round(best.best_score, 6), best_class=best.class_index)
    if not hits:
        return _reject(record, "classifier_miss")
    record.update({"decision": "kept", "reason": "kept", "class": best.class_index,
                   "class_name": lexicon.name(best.class_index)})
    return record


def _record(candidate: Candidate, plan: Plan) -> dict[str, Any]:
    return {
        "index": candidate.index, "id": candidate.id, "path": candidate.path, "title": candidate.title,
        "title_classes": plan.title_classes, "retrieved_classes": plan.retrieved_classes,
        "decision": None, "reason": None, "class": None, "class_name": None, "duration": candidate.duration,
        "frames": 0, "verified_classes": [], "best_class": None, "best_frame": None, "best_score": None,
    }


def _reject(record: dict[str, Any], reason: str, error: str | None = None) -> dict[str, Any]:
    record.update(decision="rejected", reason=reason)
    if error is not None:
        record["error"] = error
    return record


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class CurationRun:
    """One rank's view of a curation run."""

    candidates_file: Path
    out_dir: Path
    settings: CurationSettings = field(default_factory=CurationSettings)
    rank: int = 0
    world_size: int = 1
    classifier_name: str = ""
    random_init: bool = False  # the classifier is a random network: every output says the run is a dry run

    def fingerprint(self) -> dict[str, Any]:
        """What makes two invocations the same run (a rerun with other settings must not mix results)."""
        return {
            "format": "vito-curation/1",
            "candidates": str(self.candidates_file.resolve()),
            "candidates_sha256": _sha256(self.candidates_file),
            "classifier": self.classifier_name,
            "settings": asdict(self.settings),
        }


def curate(candidates_file: str | Path, out_dir: str | Path, classifier: nn.Module | None,
           settings: CurationSettings = CurationSettings(), classifier_name: str = "",
           rank: int | None = None, world_size: int | None = None, resume: bool = False,
           device: str = "auto", lexicon: Lexicon | None = None, progress: bool = True,
           random_init: bool = False) -> dict[str, Any] | None:
    """Run (or continue) this rank's share of a curation; merge when every candidate is recorded.

    ``rank``/``world_size`` default to torchrun's ``RANK``/``WORLD_SIZE`` (else 0 and 1). Returns the
    summary if this process merged, else None (other ranks still running).
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise VitoError(f"rank {rank} is outside world size {world_size}")
    run = CurationRun(Path(candidates_file), Path(out_dir), settings, rank, world_size, classifier_name, random_init)
    candidates = read_candidates(run.candidates_file)  # before the output folder is touched
    _check_run(run, resume)
    lexicon = lexicon or imagenet_lexicon()
    plans = plan_candidates(candidates, lexicon, settings.class_cap)
    done = read_parts(run.out_dir)
    todo = [c for c in candidates if c.index % world_size == rank and c.index not in done]
    frame_classifier = None
    if classifier is not None:
        model_device = _device(device)
        preprocess = Preprocess.for_model(classifier, settings.image_size)
        frame_classifier = FrameClassifier(classifier, settings.batch_size, model_device, preprocess)
    _process(run, todo, plans, frame_classifier, lexicon, progress)
    records = read_parts(run.out_dir)
    if any(c.index not in records for c in candidates):
        return None
    return merge(run, candidates, records, lexicon)


def _process(run: CurationRun, todo: list[Candidate], plans: list[Plan], classifier: FrameClassifier | None,
             lexicon: Lexicon, progress: bool) -> None:
    """Judge and durably record this rank's remaining candidates, with a videos/s and frames/s progress bar."""
    log_path = run.out_dir / "parts" / f"rank-{run.rank:05d}.jsonl"
    frames, start = 0, time.perf_counter()
    bar = progress_of(total=len(todo), desc=f"curate rank {run.rank}/{run.world_size}", unit="video",
                      enabled=progress and bool(todo))
    with RecordLog(log_path) as log, bar:
        for done, candidate in enumerate(todo, start=1):
            record = judge(candidate, plans[candidate.index], classifier, run.settings, lexicon)
            log.append(record)
            frames += record["frames"]
            elapsed = max(time.perf_counter() - start, 1e-9)
            # Explicit rates: tqdm's own shows s/video once a video takes over a second (every real classifier).
            bar.set_postfix(videos_per_s=f"{done / elapsed:.2f}", frames_per_s=f"{frames / elapsed:.1f}")
            bar.update(1)


def _check_run(run: CurationRun, resume: bool) -> None:
    """Record the run's fingerprint, or check that an existing output folder belongs to the same run."""
    marker = run.out_dir / "run.json"
    fingerprint = run.fingerprint()
    if marker.exists():
        existing = _read_fingerprint(marker)
        if existing != fingerprint:
            changed = sorted(k for k in fingerprint if existing.get(k) != fingerprint[k])
            raise VitoError(f"{run.out_dir} holds a curation run with other {', '.join(changed)}; use another --out")
    elif resume:
        raise VitoError(f"nothing to resume in {run.out_dir} (no run.json)")
    else:
        write_json(marker, fingerprint)


def _read_fingerprint(marker: Path) -> dict[str, Any]:
    """An output folder's ``run.json``; one that is not a JSON object (damaged, or some other tool's file) is a
    VitoError naming it, since the folder's records cannot be trusted to belong to this run."""
    existing = read_json(marker, "curation run record")
    if not isinstance(existing, dict):
        raise VitoError(f"{marker}: not a curation run record (a JSON {type(existing).__name__}); use another --out")
    return existing


def merge(run: CurationRun, candidates: list[Candidate], records: dict[int, dict[str, Any]],
          lexicon: Lexicon) -> dict[str, Any]:
    """Write accepted/rejected lists (candidate order), the summary and the class-distribution picture."""
    ordered = [records[c.index] for c in candidates]
    if run.random_init:  # every record that leaves this folder (prepare reads accepted.jsonl) carries the label
        ordered = [{**record, "classifier": run.classifier_name, "dry_run": DRY_RUN_LABEL} for record in ordered]
    _write_jsonl(run.out_dir / "accepted.jsonl", [r for r in ordered if r["decision"] == "kept"])
    _write_jsonl(run.out_dir / "rejected.jsonl", [r for r in ordered if r["decision"] != "kept"])
    kept = np.zeros(len(lexicon), dtype=np.int64)
    named = np.zeros(len(lexicon), dtype=np.int64)
    for record in ordered:
        named[record["title_classes"]] += 1
        if record["decision"] == "kept":
            kept[record["class"]] += 1
    reasons = Counter(r["reason"] for r in ordered)
    summary = {
        "candidates": len(ordered),
        "kept": int(kept.sum()),
        "reasons": {reason: reasons.get(reason, 0) for reason in REASONS},
        "classes_named": int((named > 0).sum()),
        "classes_kept": int((kept > 0).sum()),
        "kl_to_uniform": kl_to_uniform(kept) if kept.any() else None,  # nats; None when nothing was kept
        "per_class": {
            str(c): {"name": lexicon.name(c), "title_matches": int(named[c]), "kept": int(kept[c])}
            for c in np.nonzero(named)[0]
        },
        "settings": asdict(run.settings),
        "classifier": run.classifier_name,
    }
    if run.random_init:
        summary["dry_run"] = DRY_RUN_LABEL
    write_json(run.out_dir / "summary.json", summary)
    title = f"VideoNet curation ({DRY_RUN_LABEL})" if run.random_init else "VideoNet curation"
    plot_class_distribution(kept, run.out_dir / "class_distribution.png", title=title, kl=summary["kl_to_uniform"])
    return summary


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


RANDOM_INIT_SEED = 0  # a random-init classifier is the same network on every rank and in every rerun
DRY_RUN_LABEL = "random-init classifier: a dry run, not a curation"


def curate_from_spec(candidates_file: str | Path, out_dir: str | Path, spec: str, weights: str | Path | None,
                     settings: CurationSettings = CurationSettings(), random_init: bool = False,
                     **kwargs: Any) -> dict[str, Any] | None:
    """``curate`` with a timm/torchvision ImageNet classifier read from a local weights file.

    Without weights the classifier is only built when ``random_init`` asks for it explicitly: its "verdicts" are
    noise, which is what a dry run of the pipeline (docs/curation.md) needs and what a real curation must never
    get by forgetting ``--weights``. Such a run says so in every output (``DRY_RUN_LABEL``).
    """
    from vito.models.external import load_external_model

    if (weights is None) != random_init:
        raise VitoError(f"--classifier {spec} needs --weights FILE (local ImageNet-1k weights) or, for a dry run "
                        "without them, --random-init (not both)")
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's random stream alone
        torch.manual_seed(RANDOM_INIT_SEED)
        model = load_external_model(spec, weights)
    name = f"{spec} ({Path(weights).name})" if weights is not None else f"{spec} (random init, seed {RANDOM_INIT_SEED})"
    return curate(candidates_file, out_dir, model, settings, classifier_name=name, random_init=random_init, **kwargs)
