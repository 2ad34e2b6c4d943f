"""What makes a suite a study: rows that are pretraining runs with seeds, printable row names, and plots.

Why here, checked before anything runs: a study trains for days. A misspelt ``set:`` key (``data.crop_min_scal``),
a seed given twice or a plot naming a row that does not exist must stop ``vito report`` at once, naming the key
and the file, not after the first run. ``set:`` values are read exactly as ``vito pretrain`` reads
``key=value`` overrides (:func:`vito.config.load_config`), so a study can say nothing a command line cannot.

A pretraining row ``NAME: {pretrain: {config, data, set}, seeds: [0, 1, 2]}`` is one run per seed; seed ``s``
sets ``train.seed = s`` (``set:`` may not, the seeds are the row's). Its resolved config per seed is kept here,
so a plot's x value is read from it (a row without ``set:`` still has its x: the preset's value).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vito.config import ConfigError, load_config
from vito.errors import VitoError
from vito.schema import refuse_unknown

ROW_KEYS = ("pretrain", "seeds")
PRETRAIN_KEYS = ("config", "data", "set")
PLOT_KEYS = ("rows", "x", "metric", "references")
SEED_KEY = "train.seed"
ROW_X = "row"  # a plot's x that is each row's own name: a categorical axis (pooling variants, samplings)
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
RUNS_DIR = "runs"  # OUT/runs/<row>/seed-<s>/: the study's pretraining runs


def run_folder(out: Path, row_folder: str, seed: int) -> Path:
    return out / RUNS_DIR / row_folder / f"seed-{seed}"


@dataclass(frozen=True)
class PretrainRow:
    """A row trained by the report: one ``vito pretrain`` run per seed, all with one config and data."""

    config: str  # a shipped preset's name or an absolute path, as ``vito pretrain --config`` takes it
    data: str  # absolute
    overrides: tuple[str, ...]  # the row's ``set:``, as ``key=value`` overrides
    seeds: tuple[int, ...]
    configs: dict[int, dict[str, Any]]  # seed -> the resolved config (``Config.to_dict()``)

    def value(self, key: str) -> Any:
        """A resolved config value by its dotted key (``data.crop_min_scale``), the same for every seed."""
        node: Any = self.configs[self.seeds[0]]
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(key)
            node = node[part]
        return node


def is_pretrain_row(value: Any) -> bool:
    return isinstance(value, dict) and "pretrain" in value


def expand(value: str | Path, folder: Path) -> Path:
    """A path a suite wrote: ``~`` and ``$VARS`` (``$VITO_DATA``) expanded, relative to the suite's folder."""
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return path if path.is_absolute() else folder / path


def row_label(name: Any, where: str) -> str:
    """A row name: any printable text (``DeepLabV3+``, ``crop 0.08``); the folder it names is derived."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise VitoError(f"{where}: row name {name!r} must be printable text")
    return name


def folder_name(name: str) -> str:
    """The folder-safe form of a row name: runs of other characters become ``-``, none at either end
    (``DeepLabV3+`` -> ``DeepLabV3``, ``MoCLR (images)`` -> ``MoCLR-images``); names of letters, digits, ``.``,
    ``_`` and ``-`` stay as they are."""
    safe = UNSAFE.sub("-", name)
    if safe != name:
        safe = safe.strip("-")
    safe = safe.lstrip(".")
    return safe or "row-" + str(sum(map(ord, name)))


def parse_pretrain_row(value: dict[str, Any], folder: Path, where: str) -> PretrainRow:
    """Check a pretraining row: its keys, config, data folder, ``set:`` keys (as overrides) and seeds."""
    refuse_unknown([key for key in value if key not in ROW_KEYS], ROW_KEYS, where)
    spec = value["pretrain"]
    if not isinstance(spec, dict):
        raise VitoError(f"{where}.pretrain: expected a mapping with keys {', '.join(PRETRAIN_KEYS)}")
    refuse_unknown([key for key in spec if key not in PRETRAIN_KEYS], PRETRAIN_KEYS, f"{where}.pretrain")
    for key in ("config", "data"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise VitoError(f"{where}.pretrain.{key}: required (a {'preset or YAML file' if key == 'config' else 'folder of videos, images or shards'})")
    config = spec["config"]
    local = expand(config, folder)
    if local.is_file():
        config = str(local)
    data = expand(spec["data"], folder)  # its existence is checked when the report starts (check_data)
    overrides = _overrides(spec.get("set") or {}, f"{where}.pretrain.set")
    seeds = _seeds(value.get("seeds", [0]), f"{where}.seeds")
    configs = {}
    for seed in seeds:
        try:
            configs[seed] = load_config(config, [*overrides, f"{SEED_KEY}={seed}"]).to_dict()
        except ConfigError as error:
            raise VitoError(f"{where}.pretrain: {error}") from None
    return PretrainRow(str(config), str(data), overrides, seeds, configs)


def check_data(rows: dict[str, PretrainRow], where: str) -> None:
    """Every pretraining row's data exists: checked when a report starts, before anything runs (not when the
    file is read, so that a shipped study with placeholder paths still reads)."""
    for name, row in rows.items():
        if not Path(row.data).exists():
            raise VitoError(f"{where}: encoders.{name}.pretrain.data: {row.data} does not exist")


def _overrides(values: Any, where: str) -> tuple[str, ...]:
    """``set: {data.crop_min_scale: 0.08}`` as ``("data.crop_min_scale=0.08",)``: values written as JSON, which
    the override reader parses back to the same value (a list stays a list, ``"cuda"`` a string)."""
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise VitoError(f"{where}: expected a mapping of config keys (section.key) to values")
    if SEED_KEY in values:
        raise VitoError(f"{where}: {SEED_KEY} is the row's seeds (seeds: [...]), not a set: value")
    return tuple(f"{key}={json.dumps(value)}" for key, value in values.items())


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise VitoError(f"{where}: expected a non-empty list of integers, e.g. [0, 1, 2]")
    bad = [seed for seed in value if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0]
    if bad:
        raise VitoError(f"{where}: {bad[0]!r} is not a seed (a whole number >= 0)")
    repeated = sorted({seed for seed in value if value.count(seed) > 1})
    if repeated:
        raise VitoError(f"{where}: seed {repeated[0]} is given twice")
    return tuple(value)


@dataclass(frozen=True)
class PlotEntry:
    """One line plot: the metric of ``rows`` against a config value ``x``, ``references`` as horizontal lines."""

    title: str
    rows: tuple[str, ...]
    x: str  # a dotted config key, or ``row`` for the rows' names
    entry: str  # the evaluation entry whose metric is plotted
    metric: str
    references: tuple[str, ...]


def split_metric(address: Any, entries: dict[str, Any], where: str) -> tuple[str, str]:
    """``voc.mIoU`` -> ``("voc", "mIoU")``, the entry checked (the metric is checked against the results)."""
    if not isinstance(address, str) or "." not in address:
        raise VitoError(f"{where}: {address!r} must name ENTRY.METRIC, e.g. voc.mIoU")
    entry, metric = address.split(".", 1)
    if entry not in entries or not metric:
        raise VitoError(f"{where}: {entry!r} is not one of the suite's evaluation entries ({', '.join(entries)})")
    return entry, metric


def parse_plot(title: str, value: Any, pretrain_rows: dict[str, PretrainRow], row_names: list[str],
               entries: dict[str, Any], where: str) -> PlotEntry:
    """Check one ``plots:`` entry against the suite's rows and evaluation entries."""
    if not isinstance(value, dict):
        raise VitoError(f"{where}: expected a mapping with keys {', '.join(PLOT_KEYS)}")
    refuse_unknown([key for key in value if key not in PLOT_KEYS], PLOT_KEYS, where)
    for key in ("rows", "x", "metric"):
        if key not in value:
            raise VitoError(f"{where}: missing key {key!r}")
    rows, references = _names(value["rows"], f"{where}.rows"), _names(value.get("references", []), f"{where}.references")
    for name in (*rows, *references):
        if name not in row_names:
            raise VitoError(f"{where}: no row named {name!r} (rows: {', '.join(row_names)})")
    if not rows:
        raise VitoError(f"{where}.rows: name at least one row")
    not_trained = [name for name in rows if name not in pretrain_rows]
    x = value["x"]
    if not isinstance(x, str):
        raise VitoError(f"{where}.x: expected a config key (e.g. data.crop_min_scale) or {ROW_X!r}")
    if x != ROW_X:
        if not_trained:
            raise VitoError(f"{where}.rows: {not_trained[0]!r} is not a pretraining row, so it has no {x}; "
                            "give it as a reference")
        for name in rows:
            try:
                pretrain_rows[name].value(x)
            except KeyError:
                raise VitoError(f"{where}.x: {x!r} is not a config key of row {name!r}") from None
    entry, metric = split_metric(value["metric"], entries, f"{where}.metric")
    return PlotEntry(title, rows, x, entry, metric, references)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise VitoError(f"{where}: expected a list of row names")
    return tuple(value)
