"""The one schema: a mapping (YAML config, suite entry) or a command line into a dataclass, with one rule set."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vito.config import load_config
from vito.errors import VitoError
from vito.eval.core.registry import get, settings_from_mapping
from vito.schema import SchemaError, add_arguments, from_mapping, from_namespace, parse_yaml


@dataclass
class ToySettings:
    root: Path = field(metadata={"help": "data folder"})
    stride8: bool = field(default=True, metadata={"help": "remove the stride", "cli": {"flag": "--keep-stride",
                                                                                          "invert": True}})
    radius: float | None = field(default=18.0, metadata={"help": "0: none", "cli": {"none_at_or_below": 0}})
    sequences: list[str] | None = field(default=None, metadata={"help": "comma list", "cli": {"sep": ","}})
    lrs: tuple[float, ...] = field(default=(0.4, 0.3), metadata={"help": "base lrs"})
    ks: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "neighbours"})
    pooling: Literal["avg", "ms-avg"] = field(default="avg", metadata={"help": "temporal pooling"})
    max_videos: int | None = field(default=None, metadata={"help": "quick runs"})


def _parse(argv: list[str]) -> ToySettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ToySettings)
    return from_namespace(ToySettings, parser.parse_args(argv))


def test_cli_from_settings_keeps_todays_flag_forms() -> None:
    default = _parse(["--root", "r"])
    assert default == ToySettings(root=Path("r"))
    parsed = _parse(["--root", "r", "--keep-stride", "--radius", "0", "--sequences", "a,b", "--lrs", "0.1", "0.05",
                     "--ks", "5", "--pooling", "ms-avg", "--max-videos", "3"])
    assert parsed == ToySettings(Path("r"), stride8=False, radius=None, sequences=["a", "b"], lrs=(0.1, 0.05),
                                 ks=[5], pooling="ms-avg", max_videos=3)
    with pytest.raises(SystemExit):
        _parse(["--root", "r", "--pooling", "max"])
    with pytest.raises(SystemExit):
        _parse([])  # --root is required
    with pytest.raises(SystemExit):
        _parse(["--root", "r", "--max-videos", "3.5"])  # a word is parsed by the field's type


def test_settings_from_mapping_takes_dashes_and_names_unknown_keys() -> None:
    settings = from_mapping(ToySettings, {"root": "r", "max-videos": 2, "sequences": ["a", "b"], "radius": 0,
                                          "lrs": [0.1]}, where="toy")
    assert settings == ToySettings(Path("r"), radius=None, sequences=["a", "b"], lrs=(0.1,), max_videos=2)
    with pytest.raises(VitoError, match="toy: unknown key 'colour' \\(valid: "):
        from_mapping(ToySettings, {"root": "r", "colour": "red"}, where="toy")
    with pytest.raises(VitoError, match="toy: missing key 'root'"):
        from_mapping(ToySettings, {}, where="toy")
    with pytest.raises(VitoError, match="toy: pooling: 'max' is not one of \\['avg', 'ms-avg'\\]"):
        from_mapping(ToySettings, {"root": "r", "pooling": "max"}, where="toy")


@pytest.mark.parametrize(("values", "message"), [
    ({"max_videos": "3"}, "max_videos: expected an integer, got '3'"),
    ({"max_videos": True}, "max_videos: expected an integer, got True"),
    ({"max_videos": 3.0}, "max_videos: expected an integer, got 3.0"),
    ({"radius": "1e-5"}, "radius: expected a number, got '1e-5'"),
    ({"stride8": "yes"}, "stride8: expected true/false, got 'yes'"),
    ({"sequences": "a,b"}, "sequences: expected a list, got 'a,b'"),
    ({"ks": [10, "20"]}, "ks\\[1\\]: expected an integer, got '20'"),
    ({"lrs": None}, "lrs: may not be null"),
    ({"root": 3}, "root: expected a path, got 3"),
    ({"pooling": True}, "pooling: True is not one of"),
])
def test_a_mapping_value_must_already_have_its_fields_type(values, message) -> None:
    with pytest.raises(SchemaError, match=f"toy: {message}"):
        from_mapping(ToySettings, {"root": "r", **values}, where="toy")


def test_config_and_settings_follow_the_same_rules(tmp_path) -> None:
    """The same value is refused in a pretraining config and in an evaluation's Settings, with one wording."""
    (tmp_path / "c.yaml").write_text("train: {max_steps: '3'}\n")
    with pytest.raises(SchemaError, match=r"config: train\.max_steps: expected an integer, got '3'"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(SchemaError, match=r"knn: batch_size: expected an integer, got '3'"):
        settings_from_mapping(get("knn"), {"train": "t", "val": "v", "batch_size": "3"})
    (tmp_path / "c.yaml").write_text("data: {crop_min_scale: 4e-1}\n")
    assert load_config(tmp_path / "c.yaml").data.crop_min_scale == 0.4


def test_nested_sections_name_their_keys_as_the_user_writes_them() -> None:
    with pytest.raises(SchemaError, match=r"config: unknown key 'data\.batch_sise' \(valid: batch_size, "):
        load_config(None, ["data.batch_sise=8"])
    with pytest.raises(SchemaError, match=r"config: data: expected a mapping, got 3"):
        load_config(None, ["data=3"])


def test_yaml_reads_exponents_as_numbers_everywhere() -> None:
    assert parse_yaml("lr: 1e-5\nother: 2E3\n", "suite") == {"lr": 1e-5, "other": 2000.0}
