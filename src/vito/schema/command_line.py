"""A dataclass as command-line options: one flag per field, its default and help from the field.

Why from the dataclass: the options of ``vito eval NAME`` are exactly the fields of its Settings, which are
also the keys of a suite entry (read by :mod:`vito.schema.mapping`): a suite can say nothing a command line
cannot, and every default and help text is written once. Words are parsed by the field's type (the only
place where text becomes a number); the values argparse hands back are then checked by the mapping rules.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vito.schema.fields import FieldType, apply_sentinel, cli_options, default_of, field_type, is_required
from vito.schema.mapping import convert

T = TypeVar("T")


def flag_name(f: dataclasses.Field) -> str:
    """The command-line flag of a field: ``cli={"flag": ...}`` or ``--field-name``."""
    return cli_options(f).get("flag", "--" + f.name.replace("_", "-"))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of dataclass ``cls``; ``dest`` is the field name; defaults and help from the field."""
    for f in dataclasses.fields(cls):
        parser.add_argument(flag_name(f), **_argument(cls, f))


def _argument(cls: type, f: dataclasses.Field) -> dict[str, Any]:
    cli, kind, default = cli_options(f), field_type(cls, f), default_of(f)
    text = f.metadata.get("help", "")
    argument: dict[str, Any] = {"dest": f.name, "help": text, "default": default}
    if kind.scalar is bool and kind.container is None:
        argument["action"] = "store_false" if cli.get("invert") else "store_true"
        return argument
    choices = cli.get("choices") or (list(kind.choices) if kind.choices else None)
    if kind.container is not None and "sep" in cli:
        argument["type"] = _separated(_word_parser(kind), cli["sep"], choices, f.name)
    else:
        argument["type"] = _word_parser(kind)
        argument["choices"] = choices
        if kind.container is not None:
            argument["nargs"] = cli.get("nargs", "+")
    if "metavar" in cli:
        argument["metavar"] = cli["metavar"]
    if is_required(f) or cli.get("required"):
        argument["required"] = True
        del argument["default"]
    elif default is not None and default != [] and "(default" not in text:
        argument["help"] = f"{text} (default: %(default)s)".strip()
    return argument


def _word_parser(kind: FieldType) -> Callable[[str], Any]:
    """Text to the field's scalar type: the one place where a word becomes a number or a path."""
    if kind.choices is not None:
        return type(kind.choices[0]) if kind.choices else str
    if kind.scalar in (int, float, str, Path):
        return kind.scalar
    raise TypeError(f"type {kind.scalar!r} has no command-line form")


def _separated(parse: Callable[[str], Any], sep: str, choices: list | None, name: str) -> Callable[[str], list]:
    def parse_list(text: str) -> list:
        items = [parse(item.strip()) for item in text.split(sep) if item.strip()]
        bad = [item for item in items if choices and item not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{name}: {bad} not among {choices}")
        return items

    return parse_list


def from_namespace(cls: type[T], args: argparse.Namespace) -> T:
    """An instance of ``cls`` from parsed options, each value checked by the mapping rules (lists as the
    field's container type, sentinels applied)."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name)
        values[f.name] = apply_sentinel(f, convert(field_type(cls, f), value, flag_name(f)))
    return cls(**values)
