"""The study presets under ``configs/studies/`` cannot rot: every ``set:`` key is a real config key taking a valid
value (the same path as ``vito pretrain`` overrides), every evaluation entry a registered evaluation with options
its ``vito eval`` command accepts, every plot names rows that exist, a config key each row resolves to a distinct
value, and its entry's headline metric; each path is written once; each preset says what the paper reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vito.config import PRESET_DIR, Config, load_config
from vito.errors import VitoError
from vito.eval.core.registry import get, refuse_unused, settings_from_mapping
from vito.schema import read_yaml

STUDIES = PRESET_DIR / "studies"
PRESETS = sorted(STUDIES.glob("*.yaml"))
TOP_LEVEL = {"encoders", "evaluations", "plots", "references", "columns"}
ENCODER_KEYS = {"encoder", "weights", "random_init", "classifier", "device", "precision"}  # docs/report.md
PRETRAIN_KEYS = {"config", "data", "set"}


def test_the_papers_studies_ship() -> None:
    assert {p.stem for p in PRESETS} == {"figure_b2", "figure_b3", "table_b1", "table_b3"}


def resolved_config(pretrain: dict[str, Any]) -> Config:
    """The row's config as ``vito pretrain --config C key=value ...`` resolves it (JSON values are YAML)."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in (pretrain.get("set") or {}).items()]
    return load_config(pretrain["config"], overrides)


def config_value(config: Config, key: str) -> Any:
    node: Any = config.to_dict()
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{key!r} is not a config key"
        node = node[part]
    return node


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_pretraining_rows_resolve_with_real_keys_and_seeds(path: Path) -> None:
    study = read_yaml(path)
    assert set(study) <= TOP_LEVEL and study["encoders"] and study["evaluations"]
    for name, row in study["encoders"].items():
        if "pretrain" not in row:
            assert "encoder" in row and set(row) <= ENCODER_KEYS, name
            continue
        assert set(row) == {"pretrain", "seeds"} and set(row["pretrain"]) <= PRETRAIN_KEYS, name
        seeds = row["seeds"]
        assert seeds and all(type(s) is int for s in seeds) and len(set(seeds)) == len(seeds), name
        assert all("." in key for key in row["pretrain"].get("set") or {}), name
        config = resolved_config(row["pretrain"])  # an unknown key or a bad value raises, naming the key
        for key, value in (row["pretrain"].get("set") or {}).items():
            assert config_value(config, key) == value, f"{name}: {key} was not applied"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_evaluation_entries_are_registered_evaluations_with_valid_options(path: Path) -> None:
    for name, entry in read_yaml(path)["evaluations"].items():
        options = dict(entry)
        cls = get(options.pop("evaluation"))
        settings = settings_from_mapping(cls, options)  # unknown or missing options raise
        cls().check(settings, has_encoder=True)  # e.g. detection's fine-tune needs images and train_ann
        refuse_unused(cls, settings, has_encoder=True)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_plots_name_rows_a_varied_config_key_and_a_headline_metric(path: Path) -> None:
    study = read_yaml(path)
    rows, entries = study["encoders"], study["evaluations"]
    for title, plot in (study.get("plots") or {}).items():
        assert set(plot) <= {"rows", "x", "metric", "references"}, title
        assert set(plot["rows"]) | set(plot.get("references") or []) <= set(rows), title
        xs = [config_value(resolved_config(rows[row]["pretrain"]), plot["x"]) for row in plot["rows"]]
        assert len(set(map(json.dumps, xs))) == len(xs) >= 2, f"{title}: the rows do not vary {plot['x']}"
        entry, metric = plot["metric"].split(".", 1)
        assert metric == get(entries[entry]["evaluation"]).headline, title


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_each_path_is_written_once_and_the_papers_numbers_are_said(path: Path) -> None:
    text, study = path.read_text(), read_yaml(path)
    paths = [row["pretrain"]["data"] for row in study["encoders"].values() if "pretrain" in row]
    paths += [value for entry in study["evaluations"].values() for value in entry.values()
              if isinstance(value, str) and value.startswith("/")]
    for value in set(paths):
        assert text.count(value) == 1, f"{value} is written {text.count(value)} times; use a YAML anchor"
    assert "What the paper reports" in text.split("\nencoders:")[0]


def test_a_typo_in_a_set_key_is_refused_naming_it() -> None:
    with pytest.raises(VitoError, match="crop_min_scal"):
        resolved_config({"config": "vito_r50", "set": {"data.crop_min_scal": 0.2}})
