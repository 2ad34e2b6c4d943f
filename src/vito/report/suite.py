"""The suite file of ``vito report``: which encoders, which evaluations, which reference rows.

Why a strict schema: a suite is run once and read for hours; a misspelt key (``random-init`` for an encoder,
``davis-rot`` for an evaluation) must stop the command before anything runs, naming the key, not silently fall
back to a default. Evaluation options are exactly the options of ``vito eval NAME`` (dashes or underscores),
checked by the harness itself (``settings_from_mapping``), so a suite can say nothing a command line cannot.

Relative paths in the file resolve against the file's own folder, so a suite and its data can move together.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vito.config import PRESET_DIR
from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.encoders import is_outside
from vito.eval.core.registry import REGISTRY, Evaluation, discover, get, settings_from_mapping
from vito.report.launch.settings import LauncherSettings, parse_launcher
from vito.report.study import (
    PlotEntry,
    PretrainRow,
    expand,
    folder_name,
    is_pretrain_row,
    parse_plot,
    parse_pretrain_row,
    row_label,
    split_metric,
)
from vito.schema import from_mapping, parse_yaml, refuse_unknown

# shared: holds YAML anchors only; launcher: the jobs' resources under --launcher submitit
TOP_LEVEL_KEYS = ("encoders", "evaluations", "references", "columns", "plots", "launcher", "shared")
ENTRY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # entry names: folders, and NAME in NAME.METRIC
OWN_CLASSIFIER = "own"
STUDIES_DIR = PRESET_DIR / "studies"  # the paper's studies, shipped with vito (``vito report crop_scale``)


@dataclass(frozen=True)
class EncoderEntry:
    """One row of the report: an encoder and, optionally, its own ImageNet head (``own`` or a head file), or a
    pretraining row (``pretrain``), whose encoders are its runs' (one per seed, made by the report)."""

    name: str
    spec: EncoderSpec | None  # None for a pretraining row until the grid names a seed's run folder
    classifier: str | None = None
    pretrain: PretrainRow | None = None

    @property
    def folder(self) -> str:
        return folder_name(self.name)


@dataclass(frozen=True)
class EvaluationEntry:
    """One evaluation entry of the suite: its name (a column group, a folder, NAME in ``NAME.METRIC``), the
    registered ``vito eval`` it runs and that command's options. ``knn: {...}`` is the entry ``knn`` of
    evaluation knn; ``knn-64: {evaluation: knn, ...}`` a second one."""

    name: str
    options: dict[str, Any]  # underscore keys, paths resolved against the suite's folder
    evaluation: str = ""

    def __post_init__(self) -> None:
        if not self.evaluation:
            object.__setattr__(self, "evaluation", self.name)

    def settings(self, overrides: dict[str, Any] | None = None) -> Any:
        return make_settings(self.evaluation, {**self.options, **(overrides or {})})


@dataclass(frozen=True)
class ReferenceEntry:
    """A row without an encoder: per evaluation, the options of its scoring-only mode (``davis --results``,
    ``model-vs-human --humans``), laid over that evaluation's suite options."""

    name: str
    options: dict[str, dict[str, Any]]


@dataclass
class Suite:
    path: Path
    encoders: dict[str, EncoderEntry] = field(default_factory=dict)
    evaluations: dict[str, EvaluationEntry] = field(default_factory=dict)
    references: dict[str, ReferenceEntry] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)  # entry -> metrics the tables show
    plots: dict[str, PlotEntry] = field(default_factory=dict)
    launcher: LauncherSettings | None = None  # the jobs' resources under --launcher submitit

    @property
    def row_names(self) -> list[str]:
        return [*self.encoders, *self.references]

    @property
    def pretrain_rows(self) -> dict[str, PretrainRow]:
        return {name: entry.pretrain for name, entry in self.encoders.items() if entry.pretrain is not None}


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite YAML file; every problem is a ``VitoError`` naming the key and the file."""
    path = Path(path)
    if not path.exists() and (STUDIES_DIR / f"{path.stem}.yaml").is_file() and path.parent == Path("."):
        path = STUDIES_DIR / f"{path.stem}.yaml"  # a shipped study by name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VitoError(f"suite file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise VitoError(f"cannot read suite {path}: {error}") from error
    # One line naming the line and column; a key given twice (two encoders of one name) is refused.
    raw = parse_yaml(text, f"cannot read suite {path}")
    if raw is None:
        raw = {}
    return parse_suite(raw, path)


def parse_suite(raw: Any, path: Path) -> Suite:
    """A ``Suite`` from the parsed YAML mapping; ``path`` names the file in messages and anchors relative paths."""
    top = _mapping(raw, f"{path}")
    refuse_unknown([k for k in top if k not in TOP_LEVEL_KEYS], TOP_LEVEL_KEYS, f"{path}")
    folder = path.resolve().parent
    suite = Suite(path=path.resolve())
    discover()
    for name, value in _mapping(top.get("encoders") or {}, f"{path}: encoders").items():
        name = row_label(name, f"{path}: encoders")
        suite.encoders[name] = _encoder_entry(name, value, folder, path)
    for name, value in _mapping(top.get("evaluations") or {}, f"{path}: evaluations").items():
        suite.evaluations[name] = _evaluation_entry(name, value, folder, path)
    for name, value in _mapping(top.get("references") or {}, f"{path}: references").items():
        if name in suite.encoders:
            raise VitoError(f"{path}: references.{name}: the name is already an encoder's; rows need distinct names")
        suite.references[row_label(name, f"{path}: references")] = _reference_entry(name, value, suite, folder, path)
    _check_folders(suite, path)
    for name, metrics in _mapping(top.get("columns") or {}, f"{path}: columns").items():
        suite.columns[name] = _columns_entry(name, metrics, suite, path)
    suite.launcher = parse_launcher(top.get("launcher"), f"{path}: launcher")
    if not suite.evaluations:
        raise VitoError(f"{path}: the suite names no evaluations (key 'evaluations')")
    if not suite.row_names:
        raise VitoError(f"{path}: the suite names no encoders and no references (key 'encoders')")
    for title, value in _mapping(top.get("plots") or {}, f"{path}: plots").items():
        suite.plots[title] = parse_plot(title, value, suite.pretrain_rows, suite.row_names, suite.evaluations,
                                        f"{path}: plots.{title}")
    return suite


def _check_folders(suite: Suite, path: Path) -> None:
    """Two rows whose names give one folder (``a+`` and ``a?``) would share their cells: refused."""
    seen: dict[str, str] = {}
    for name in suite.row_names:
        other = seen.setdefault(folder_name(name), name)
        if other != name:
            raise VitoError(f"{path}: rows {other!r} and {name!r} both give the folder name {folder_name(name)!r}; "
                            "rename one")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise VitoError(f"{where}: expected a mapping of names to values, got {type(value).__name__}")
    return value


def _resolve(value: str | Path, folder: Path) -> Path:
    return expand(value, folder)


@dataclass
class EncoderOptions(EncoderSpec):
    """An encoder row as a suite writes it: the encoder options every command takes, and the row's own head."""

    classifier: str | None = None


def _encoder_entry(name: str, value: Any, folder: Path, path: Path) -> EncoderEntry:
    where = f"{path}: encoders.{name}"
    if is_pretrain_row(value):
        return EncoderEntry(name, None, pretrain=parse_pretrain_row(value, folder, where))
    options = from_mapping(EncoderOptions, {"encoder": value} if isinstance(value, str) else value, where)
    if not is_outside(options.encoder):
        options.encoder = str(_resolve(options.encoder, folder))
    if options.weights is not None:
        options.weights = _resolve(options.weights, folder)
    if options.classifier is not None and options.classifier != OWN_CLASSIFIER:
        options.classifier = str(_resolve(options.classifier, folder))
    spec = EncoderSpec(**{f.name: getattr(options, f.name) for f in dataclasses.fields(EncoderSpec)})
    try:
        spec.check()
    except VitoError as error:
        raise VitoError(f"{where}: {error}") from None
    return EncoderEntry(name, spec, options.classifier)


def _options(cls: type[Evaluation], value: Any, folder: Path, where: str) -> dict[str, Any]:
    """Check ``value`` as options of ``cls`` (the schema names any bad key) and resolve its path values."""
    mapping = _mapping(value if value is not None else {}, where)
    settings = from_mapping(cls.Settings, {key: v for key, v in mapping.items() if v is not None}, where)
    options = {key.replace("-", "_"): v for key, v in mapping.items()}
    for name, parsed in vars(settings).items():
        if name in options and options[name] is not None:
            options[name] = _resolve_paths(parsed, folder, options[name])
    return options


def _resolve_paths(parsed: Any, folder: Path, given: Any) -> Any:
    """Paths the harness parsed become absolute (against the suite's folder); other values stay as written."""
    if isinstance(parsed, Path):
        return str(_resolve(parsed, folder))
    if isinstance(parsed, (list, tuple)) and parsed and all(isinstance(p, Path) for p in parsed):
        return [str(_resolve(p, folder)) for p in parsed]
    return given


def _evaluation_entry(name: str, value: Any, folder: Path, path: Path) -> EvaluationEntry:
    """``NAME: {evaluation: EVAL, ...options}``, or ``EVAL: {...options}`` (the entry named as its evaluation)."""
    where = f"{path}: evaluations.{name}"
    if not ENTRY_PATTERN.fullmatch(name):
        raise VitoError(f"{where}: an entry name is letters, digits, '_' or '-' (it names a folder and NAME in "
                        "NAME.METRIC)")
    value = dict(_mapping(value if value is not None else {}, where))
    evaluation = value.pop("evaluation", name)
    if evaluation not in REGISTRY:
        raise VitoError(f"{where}: no such evaluation {evaluation!r} (known: {', '.join(sorted(REGISTRY))})")
    cls = get(evaluation)
    if cls.needs_encoder is False:  # scoring only: these options are shared defaults of its reference rows
        options = {k.replace("-", "_"): v for k, v in value.items()}
        known = [f.name for f in dataclasses.fields(cls.Settings)]
        refuse_unknown([key for key in options if key not in known], known, where)
        return EvaluationEntry(name, options, evaluation)
    return EvaluationEntry(name, _options(cls, value, folder, where), evaluation)


def _reference_entry(name: str, value: Any, suite: Suite, folder: Path, path: Path) -> ReferenceEntry:
    where = f"{path}: references.{name}"
    options: dict[str, dict[str, Any]] = {}
    for evaluation, overrides in _mapping(value, where).items():
        if evaluation not in suite.evaluations:
            raise VitoError(f"{where}: {evaluation!r} is not one of the suite's evaluations "
                            f"({', '.join(suite.evaluations)})")
        cls = get(suite.evaluations[evaluation].evaluation)
        if cls.needs_encoder is True:
            raise VitoError(f"{where}: {evaluation} has no scoring-only mode; a reference row needs one")
        overrides = _mapping(overrides if overrides is not None else {}, f"{where}.{evaluation}")
        own = {k.replace("-", "_"): v for k, v in overrides.items()}
        merged = _without_unused({**suite.evaluations[evaluation].options, **own}, own, cls, f"{where}.{evaluation}")
        options[evaluation] = _options(cls, merged, folder, f"{where}.{evaluation}")
    return ReferenceEntry(name, options)


def _without_unused(merged: dict[str, Any], own: dict[str, Any], cls: type[Evaluation], where: str) -> dict[str, Any]:
    """The suite's shared options of an evaluation are meant for its encoder rows too: those the scoring-only
    mode does not use (DAVIS's propagation settings) are left out of a reference row, unless the row sets them
    itself, which the harness refuses (a value given and not applied)."""
    settings = from_mapping(cls.Settings, {k: v for k, v in merged.items() if v is not None}, where)
    unused = cls().unused_settings(settings, has_encoder=False)
    return {key: value for key, value in merged.items() if key not in unused or key in own}


def _columns_entry(name: str, metrics: Any, suite: Suite, path: Path) -> list[str]:
    """The metrics (by name, in order) that the tables show for one evaluation entry, each ``METRIC`` or
    ``NAME.METRIC``; results.json keeps them all."""
    where = f"{path}: columns.{name}"
    if name not in suite.evaluations:
        raise VitoError(f"{where}: {name!r} is not one of the suite's evaluations ({', '.join(suite.evaluations)})")
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise VitoError(f"{where}: expected a list of metric names, e.g. [top1, top5]")
    shown = []
    for metric in metrics:
        if metric.startswith(f"{name}."):
            metric = split_metric(metric, suite.evaluations, where)[1]
        shown.append(metric)
    return shown


def make_settings(evaluation: str, options: dict[str, Any]) -> Any:
    """The Settings of ``evaluation`` for ``options``; a ``None`` value drops an option (the default applies)."""
    return settings_from_mapping(get(evaluation), {k: v for k, v in options.items() if v is not None})
