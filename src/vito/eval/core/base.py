"""The evaluation harness: one registry, one typed Settings per evaluation, one Result, one writer.

Why: every evaluation (kNN, linear probe, DAVIS, UCF-101, model-vs-human, the robustness sets, ClickMe, and the
dense transfers) is one registered class with a ``Settings`` dataclass that is the only place its defaults and
help live. ``vito eval NAME`` is built from that dataclass (``add_evaluation_commands``) and ``vito report``
runs the same classes, so a number in a report is the number the standalone command prints. Every run ends in
a ``Result`` written by ``write_result``: JSON with unrounded values (``None`` where a value is undefined) and a
short markdown page, the same for every evaluation.

Metric kinds: ``proportion`` in [0, 1] (top-1, J&F, pm-k), ``signed`` (Cohen's kappa, Δ-accuracy), ``count``,
``value`` (anything else, e.g. a normalised Spearman that may exceed 1). A proportion outside [0, 1] is a bug
and raises at construction.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import pkgutil
import platform
import statistics
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Literal

from vito.engine.distributed import launched_rank
from vito.errors import VitoError
from vito.eval.core.encoders import Encoder, EncoderSpec, add_encoder_arguments
from vito.io import atomic_write

Kind = Literal["proportion", "signed", "count", "value"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
RESULT_JSON, RESULT_MD = "result.json", "result.md"
RESULT_FORMAT = "vito-result/1"


# --------------------------------------------------------------------------------------------------
# Results


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
            text += f"; {self.training_skipped} training items unreadable (trained without them)"
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


def write_result(result: Result, out_dir: Path) -> None:
    """``out_dir/result.json`` (every value unrounded, undefined ones as null) and ``out_dir/result.md``."""
    out_dir = Path(out_dir)
    data = result_to_dict(result)
    with atomic_write(out_dir / RESULT_JSON) as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
    with atomic_write(out_dir / RESULT_MD) as handle:
        handle.write(result_markdown(result))


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


def format_value(metric: Metric) -> str:
    """Four decimals for fractions and signed values (proportions also as a percent), integers for counts."""
    if metric.value is None:
        return "–"
    if metric.kind == "count":
        return f"{metric.value:.0f}"
    if metric.kind == "proportion":
        return f"{metric.value:.4f} ({100 * metric.value:.2f} %)"
    return f"{metric.value:.4f}"


MAX_MARKDOWN_ROWS = 50


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "–"
    return "–" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], limit: int = MAX_MARKDOWN_ROWS) -> list[str]:
    """A markdown table of dict rows (columns in first-seen order), at most ``limit`` rows shown."""
    if not rows:
        return ["(empty)"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in {RESULT_JSON})")
    return lines


def summary_line(result: Result, count: int = 3) -> str:
    """One terminal line: the first metrics, and the coverage when it is partial."""
    name = result.encoder.get("name") or "scoring only"
    values = ", ".join(f"{m.label or key} {format_value(m)}" for key, m in list(result.metrics.items())[:count])
    cov = result.coverage
    partial = f" [PARTIAL: {cov.describe()}]" if cov.partial else ""
    return f"{result.evaluation} — {name}: {values or 'no metrics'}{partial}"


def result_markdown(result: Result) -> str:
    """The human-readable page of a Result: metrics, coverage, skipped inputs, pictures, tables, settings."""
    name = result.encoder.get("name") or result.encoder.get("spec") or "no encoder (scoring only)"
    cov = result.coverage
    lines = [f"# {result.evaluation} — {name}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {m.label or key} | {format_value(m)} |" for key, m in result.metrics.items()]
    lines += ["", f"Coverage: {cov.describe()}"
              + (" — **PARTIAL: the numbers cover only part of the data**" if cov.partial else "")]
    if result.skipped:
        lines += ["", f"Skipped {len(result.skipped)} inputs:"]
        lines += [f"- {item}: {reason}" for item, reason in result.skipped[:MAX_MARKDOWN_ROWS]]
        if len(result.skipped) > MAX_MARKDOWN_ROWS:
            lines.append(f"- ... ({len(result.skipped) - MAX_MARKDOWN_ROWS} more in {RESULT_JSON})")
    for picture in result.pictures:
        lines += ["", f"![{Path(picture).stem}]({picture})"]
    for title, rows in result.tables.items():
        lines += ["", f"## {title}", "", *markdown_table(rows)]
    if result.artifacts:
        lines += ["", "Files: " + ", ".join(f"{k}: `{v}`" for k, v in result.artifacts.items())]
    lines += ["", "## Settings", "", *markdown_table([{"setting": k, "value": json.dumps(plain(v))}
                                                      for k, v in result.settings.items()])]
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
    lines += ["", f"{result.seconds:.1f} s" + (f"; {versions}" if versions else ""), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Evaluations and the registry


class Evaluation:
    """Subclass, set the class attributes, implement ``run`` and decorate with ``@register``."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    needs_encoder: ClassVar[bool | Literal["optional"]] = True
    uses_classifier: ClassVar[bool] = False  # its Settings has a ``classifier`` field (own | head file)
    group: ClassVar[str] = "other"  # report grouping: "scene", "video", "ood", "human", "dense"
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def run(self, encoder: Encoder | None, settings: Any, out_dir: Path) -> Result:
        raise NotImplementedError

    def check(self, settings: Any, has_encoder: bool) -> None:
        """Refuse settings that cannot run (before an encoder is loaded); the default checks the encoder rule."""
        if self.needs_encoder is True and not has_encoder:
            raise VitoError(f"vito eval {self.name} needs --encoder ENC")


REGISTRY: dict[str, type[Evaluation]] = {}


def register(cls: type[Evaluation]) -> type[Evaluation]:
    """Class decorator: make ``cls`` available as ``vito eval cls.name`` and to ``vito report``."""
    if not dataclasses.is_dataclass(getattr(cls, "Settings", None)):
        raise TypeError(f"{cls.__name__}.Settings must be a dataclass")
    existing = REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"evaluation name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def discover() -> dict[str, type[Evaluation]]:
    """Import every module under ``vito.eval`` so that each registers its evaluations; returns the registry.

    Why walk everything: an evaluation is found because its package holds it, not because a list names it.
    """
    package = importlib.import_module("vito.eval")
    for module in pkgutil.walk_packages(package.__path__, prefix="vito.eval."):
        if not module.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(module.name)
    return REGISTRY


def get(name: str) -> type[Evaluation]:
    """The registered evaluation called ``name`` (a ``VitoError`` listing the known names otherwise)."""
    if name not in REGISTRY:
        discover()
    if name not in REGISTRY:
        raise VitoError(f"unknown evaluation {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


# --------------------------------------------------------------------------------------------------
# Settings: from a mapping (suite files) and from the command line


def _cli(f: dataclasses.Field) -> dict[str, Any]:
    return dict(f.metadata.get("cli", {}))


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _field_type(settings_cls: type, f: dataclasses.Field) -> tuple[Any, bool, Any]:
    """(scalar type, optional?, container: list/tuple or None) of a Settings field."""
    hint, optional = _strip_optional(typing.get_type_hints(settings_cls)[f.name])
    container = None
    if typing.get_origin(hint) in (list, tuple, Sequence):
        container = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        hint = args[0] if args else str
    return hint, optional, container


def _scalar_parser(hint: Any) -> Callable[[str], Any]:
    if typing.get_origin(hint) is Literal:
        return str
    if hint in (int, float, str, Path):
        return hint
    if hint is bool:
        return _parse_bool
    raise TypeError(f"Settings field type {hint!r} has no command-line form")


def _parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise VitoError(f"{text!r} is not a boolean (true/false)")


def _coerce(settings_cls: type, f: dataclasses.Field, value: Any) -> Any:
    """A mapping value (YAML: already typed, or a string) as the field's type, with the field's sentinel."""
    hint, optional, container = _field_type(settings_cls, f)
    cli = _cli(f)
    if value is None:
        if not optional:
            raise VitoError(f"{f.name} may not be null")
        return None
    if container is not None:
        items = value.split(cli.get("sep", ",")) if isinstance(value, str) else list(value)
        items = [_convert(hint, item, f.name) for item in items if not (isinstance(item, str) and not item.strip())]
        return tuple(items) if container is tuple else items
    converted = _convert(hint, value, f.name)
    if "none_at_or_below" in cli and converted <= cli["none_at_or_below"]:
        return None
    return converted


def _convert(hint: Any, value: Any, name: str) -> Any:
    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint):
            raise VitoError(f"{name}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    try:
        return _scalar_parser(hint)(value) if not isinstance(value, hint) else value
    except (TypeError, ValueError) as error:
        raise VitoError(f"{name}: {value!r} is not a {getattr(hint, '__name__', hint)}") from error


def settings_from_mapping(cls: type[Evaluation], mapping: Mapping[str, Any]) -> Any:
    """``cls.Settings`` from a suite file's mapping (keys with dashes or underscores); unknown keys are an error."""
    settings_cls = cls.Settings
    fields = {f.name: f for f in dataclasses.fields(settings_cls)}
    values, unknown = {}, []
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            unknown.append(str(key))
            continue
        values[name] = _coerce(settings_cls, fields[name], value)
    if unknown:
        raise VitoError(f"{cls.name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in values and _required(f)]
    if missing:
        raise VitoError(f"{cls.name}: missing setting(s) {', '.join(missing)}")
    return settings_cls(**values)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def settings_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain JSON values, for ``Result.settings``."""
    return plain(dataclasses.asdict(settings))


def flag_name(f: dataclasses.Field) -> str:
    """The command-line flag of a Settings field: ``cli={"flag": ...}`` or ``--field-name``."""
    return _cli(f).get("flag", "--" + f.name.replace("_", "-"))


def add_settings_arguments(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One argument per Settings field; ``dest`` is the field name; defaults and help from the field.

    Field metadata ``cli`` may hold: ``flag`` (a different flag name), ``invert`` (a boolean field that the
    flag sets to False, e.g. ``--keep-stride`` for ``stride8``), ``none_at_or_below`` (a sentinel: ``--radius 0``
    means None), ``sep`` (list given as one comma-separated word instead of several words), ``nargs``,
    ``positional``, ``required``, ``choices``, ``metavar``.
    """
    for f in dataclasses.fields(settings_cls):
        cli = _cli(f)
        if cli.get("hidden"):
            continue
        hint, optional, container = _field_type(settings_cls, f)
        default = _default(f)
        text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "help": text}
        if hint is bool and container is None:
            if cli.get("invert"):
                kwargs.update(action="store_false", default=default)
            else:
                kwargs.update(action="store_true", default=default)
            parser.add_argument(flag_name(f), **kwargs)
            continue
        scalar = _scalar_parser(hint)
        choices = cli.get("choices") or (list(typing.get_args(hint)) if typing.get_origin(hint) is Literal else None)
        if container is not None and "sep" in cli:
            kwargs["type"] = _list_parser(scalar, cli["sep"], choices, f.name)
        elif container is not None:
            kwargs.update(type=scalar, nargs=cli.get("nargs", "+"))
            if choices:
                kwargs["choices"] = choices
        else:
            kwargs["type"] = _sentinel_parser(scalar, cli["none_at_or_below"]) if "none_at_or_below" in cli else scalar
            if choices:
                kwargs["choices"] = choices
        if "metavar" in cli:
            kwargs["metavar"] = cli["metavar"]
        if cli.get("positional"):
            kwargs.pop("dest")
            parser.add_argument(f.name, **kwargs)
            continue
        kwargs["default"] = default
        if _required(f) or cli.get("required"):
            kwargs["required"] = True
            kwargs.pop("default")
        elif default is not None and default != [] and "help" in kwargs and "(default" not in text:
            kwargs["help"] = f"{text} (default: %(default)s)".strip()
        parser.add_argument(flag_name(f), **kwargs)


def _list_parser(scalar: Callable, sep: str, choices: list | None, name: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [scalar(item.strip()) for item in text.split(sep) if item.strip()]
        bad = [item for item in items if choices and item not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{name}: {bad} not among {choices}")
        return items

    return parse


def _sentinel_parser(scalar: Callable, threshold: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = scalar(text)
        return None if value <= threshold else value

    return parse


def settings_from_namespace(cls: type[Evaluation], args: argparse.Namespace) -> Any:
    """``cls.Settings`` from parsed arguments (lists as the field's container type)."""
    values = {}
    for f in dataclasses.fields(cls.Settings):
        if _cli(f).get("hidden"):
            continue
        value = getattr(args, f.name)
        _, _, container = _field_type(cls.Settings, f)
        if container is tuple and value is not None:
            value = tuple(value)
        if isinstance(value, str) and container is not None:  # a comma-list default written as text
            value = _coerce(cls.Settings, f, value)
        values[f.name] = value
    return cls.Settings(**values)


# --------------------------------------------------------------------------------------------------
# Running one evaluation (the path `vito eval` and `vito report` share)


def package_versions() -> dict[str, str]:
    """Versions that change numbers: python, torch, torchvision, timm, numpy, vito."""
    versions = {"python": platform.python_version()}
    for name in ("vito", "torch", "torchvision", "timm", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def add_evaluation_commands(evals: argparse._SubParsersAction) -> None:
    """``vito eval NAME`` for every registered evaluation: encoder options, ``--out`` and its Settings."""
    for name, cls in sorted(discover().items()):
        parser = evals.add_parser(name, help=cls.help, description=cls.description or cls.help)
        if cls.needs_encoder:
            add_encoder_arguments(parser, required=cls.needs_encoder is True)
        parser.add_argument("--out", type=Path, required=True, help="output folder (result.json, result.md, pictures)")
        add_settings_arguments(parser, cls.Settings)
        parser.set_defaults(evaluation_class=cls)


def run_from_args(args: argparse.Namespace) -> Result:
    """The ``vito eval NAME`` handler: Settings and EncoderSpec from the arguments, then ``run_evaluation``."""
    cls = args.evaluation_class
    spec = EncoderSpec.from_args(args) if cls.needs_encoder and args.encoder is not None else None
    if spec is None and cls.needs_encoder and (args.weights is not None or args.random_init):
        raise VitoError("--weights and --random-init go with --encoder ENC")
    return run_evaluation(cls.name, settings_from_namespace(cls, args), args.out, spec)


def stamped_settings(given: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """The settings a Result keeps: every field as given, then what the evaluation recorded of its own.

    Why the given values win: ``vito report`` reuses a stored Result only when its settings equal the
    suite's, field by field. An evaluation that records a field it resolved (a default list of lrs in place
    of "none given") would make every stored Result look stale, so such a value is kept as ``NAME_as_run``.
    """
    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)

    stamped = dict(given)
    for key, value in recorded.items():
        stamped[key if key not in given or same(value, given[key]) else f"{key}_as_run"] = value
    return stamped


RERUN_FLAGS = ("resume", "overwrite")  # settings that say how to continue a run, not which run it is


def check_out_dir(name: str, settings: Any, out_dir: Path, spec: EncoderSpec | None) -> None:
    """Refuse an ``OUT`` that holds another run's Result, before anything is computed or written.

    Why: ``write_result`` would replace that run's result.json and result.md (and its pictures) without a
    word. The same evaluation with the same encoder and settings is this run again (``vito report`` and
    ``--resume`` rely on rerunning into a folder) and may replace it; so may ``--overwrite`` where an
    evaluation has it. A non-folder ``OUT`` or an unreadable result.json are refused too.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VitoError(f"--out {out_dir} is a file, not a folder")
    if not (out_dir / RESULT_JSON).exists() or getattr(settings, "overwrite", False) is True:
        return
    try:
        previous = read_result(out_dir)
    except VitoError as error:
        raise VitoError(f"--out {out_dir} already holds a {RESULT_JSON} that is not a vito result ({error}); "
                        "choose another --out") from error
    given = {k: v for k, v in settings_dict(settings).items() if k not in RERUN_FLAGS}
    encoder = plain(spec.describe()) if spec is not None else {}
    differences = [f"evaluation {previous.evaluation}"] if previous.evaluation != name else []
    differences += [f"encoder {k}" for k, v in encoder.items() if previous.encoder.get(k) != v]
    if spec is None and previous.encoder.get("spec"):
        differences.append(f"encoder {previous.encoder['spec']}")
    differences += [k for k, v in given.items() if json.dumps(previous.settings.get(k), sort_keys=True, default=str)
                    != json.dumps(v, sort_keys=True, default=str)]
    if differences:
        overwrite = ", give --overwrite" if hasattr(settings, "overwrite") else ""
        raise VitoError(f"--out {out_dir} already holds another run's result (different settings, evaluation or "
                        f"encoder: {', '.join(differences[:5])}); choose another --out{overwrite}, or remove "
                        f"{out_dir / RESULT_JSON}")


def run_evaluation(name: str, settings: Any, out_dir: Path, spec: EncoderSpec | None = None) -> Result:
    """Check (the settings, and that ``out_dir`` holds no other run), load the encoder (if any), run, stamp
    encoder/settings/versions/time, and write the Result."""
    cls = get(name)
    evaluation = cls()
    if spec is not None and cls.needs_encoder is False:
        raise VitoError(f"vito eval {name} takes no encoder")
    if spec is not None:
        spec.check()
    evaluation.check(settings, spec is not None)
    check_out_dir(name, settings, Path(out_dir), spec)
    started = time.perf_counter()
    encoder = spec.load() if spec is not None else None
    result = evaluation.run(encoder, settings, Path(out_dir))
    result.settings = stamped_settings(settings_dict(settings), result.settings)
    if spec is not None:
        result.encoder = {**spec.describe(), "name": encoder.name, **result.encoder}
    result.seconds = result.seconds or time.perf_counter() - started
    result.versions = result.versions or package_versions()
    if launched_rank() == 0:  # under torchrun every process holds the same Result; one writes it
        write_result(result, Path(out_dir))
    return result
