"""One Result per evaluation run: named metrics with a kind, coverage, tables, pictures, skipped inputs.

Why one contract: every evaluation (kNN to detection) ends in the same record, so ``vito report`` can compare
any two, a partial run is flagged the same way everywhere, and ``result.json`` keeps every value unrounded
(``None`` where a value is undefined).

Metric kinds: ``proportion`` in [0, 1] (top-1, J&F, pm-k), ``signed`` (Cohen's kappa, Δ-accuracy), ``count``,
``value`` (anything else, e.g. a normalised Spearman that may exceed 1). A proportion outside [0, 1] is a bug
and raises at construction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vito.errors import VitoError

Kind = Literal["proportion", "signed", "count", "value"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
RESULT_JSON, RESULT_MD = "result.json", "result.md"
RESULT_FORMAT = "vito-result/1"




@dataclass
class Metric:
    """One named number; ``value=None`` means undefined (e.g. COCO's -1, a kappa of a constant observer)."""

    value: float | None
    kind: Kind
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric kind {self.kind!r} is not one of {KINDS}")
        if self.value is not None:
            value = float(self.value)
            self.value = None if math.isnan(value) else value
        if self.kind == "proportion" and self.value is not None and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"proportion {self.label or ''} = {self.value} lies outside [0, 1]")


@dataclass
class Coverage:
    """How much of what the data promised was evaluated: ``used`` of ``expected`` items (images, videos...).

    ``training_skipped``: for evaluations that train (fine-tunes, probes), training items that could not be
    read; the model learned from the rest, so its figures depend on partial data too and are flagged.
    """

    used: int
    expected: int
    note: str = ""
    training_skipped: int = 0

    @property
    def partial(self) -> bool:
        return self.used < self.expected or self.training_skipped > 0

    def describe(self) -> str:
        """'U of E items (note)', and the unreadable training items when there were any."""
        text = f"{self.used} of {self.expected} items" + (f" ({self.note})" if self.note else "")
        if self.training_skipped:
            text += f"; {self.training_skipped} training items missing or unreadable (trained without them)"
        return text


@dataclass
class Result:
    """What one evaluation of one encoder produced; paths are relative to its output folder."""

    evaluation: str
    metrics: dict[str, Metric]
    settings: dict[str, Any]
    coverage: Coverage
    encoder: dict[str, Any] = field(default_factory=dict)  # spec, weights, random_init, identity, name
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pictures: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    artifacts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        """A metric's value by name (a ``VitoError`` naming the known metrics when absent)."""
        if name not in self.metrics:
            raise VitoError(f"{self.evaluation} has no metric {name!r} (it has {', '.join(self.metrics)})")
        return self.metrics[name].value


def plain(value: Any) -> Any:
    """JSON-ready copy: paths as strings, tuples as lists, NaN/inf as None, tensors/arrays via ``tolist``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if hasattr(value, "item"):
        return plain(value.item())
    return str(value)


def mean_and_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of one number over repeated runs (seeds, splits).

    Both are ``None`` (null in the Result) when any run's number is undefined (``None`` or NaN): a mean over
    the runs that happened to give a number would be a figure on partial data, reported as if whole. The sd
    is ``None`` for a single run (it is undefined there, not 0).
    """
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values or len(defined) < len(values):
        return None, None
    return statistics.fmean(defined), statistics.stdev(defined) if len(defined) > 1 else None


def result_to_dict(result: Result) -> dict[str, Any]:
    data = {"format": RESULT_FORMAT, **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)}}
    data["metrics"] = {name: dataclasses.asdict(m) for name, m in result.metrics.items()}
    data["coverage"] = {**dataclasses.asdict(result.coverage), "partial": result.coverage.partial}
    return plain(data)


def result_from_dict(data: Mapping[str, Any]) -> Result:
    if data.get("format") != RESULT_FORMAT:
        raise VitoError(f"not a vito result (format {data.get('format')!r}, expected {RESULT_FORMAT!r})")
    coverage = {k: v for k, v in data["coverage"].items() if k != "partial"}
    return Result(
        evaluation=data["evaluation"],
        metrics={name: Metric(**m) for name, m in data["metrics"].items()},
        settings=dict(data["settings"]),
        coverage=Coverage(**coverage),
        encoder=dict(data.get("encoder", {})),
        tables={k: list(v) for k, v in data.get("tables", {}).items()},
        pictures=list(data.get("pictures", [])),
        skipped=[(str(item), str(reason)) for item, reason in data.get("skipped", [])],
        artifacts=dict(data.get("artifacts", {})),
        seconds=float(data.get("seconds", 0.0)),
        versions=dict(data.get("versions", {})),
    )


def read_result(out_dir: Path) -> Result:
    """The Result that ``write_result`` left in ``out_dir`` (a ``VitoError`` when there is none)."""
    path = Path(out_dir) / RESULT_JSON
    if not path.is_file():
        raise VitoError(f"no evaluation result at {path}")
    try:
        data = json.loads(path.read_text())
        return result_from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        raise VitoError(f"{path} is not a readable vito result: {error}") from error
