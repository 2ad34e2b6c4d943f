"""What a dataclass field accepts: its scalar type, whether it may be null, and whether it holds a list.

Both readers of the schema (mappings from YAML, words from a command line) start from this one analysis, so a
field means the same in a config, a suite and on a command line.

Field metadata ``cli`` (a dict) shapes the field's command-line form and one value rule shared by both readers:
``none_at_or_below`` (a sentinel: ``--radius 0`` and ``radius: 0`` both mean None). The other keys are for the
command line only: ``flag`` (another flag name), ``invert`` (a boolean the flag sets to False, e.g.
``--keep-stride`` for ``stride8``), ``sep`` (a list given as one comma-separated word), ``nargs``,
``required``, ``choices``, ``metavar``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SCALARS = (bool, int, float, str, Path)


@dataclass(frozen=True)
class FieldType:
    """The accepted shape of one field: ``scalar`` (a SCALARS type, a ``Literal`` or a dataclass), ``optional``
    (None allowed), ``container`` (``list``, ``tuple`` or None)."""

    scalar: Any
    optional: bool
    container: type | None

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return typing.get_args(self.scalar) if typing.get_origin(self.scalar) is Literal else None


def field_type(cls: type, f: dataclasses.Field) -> FieldType:
    """The ``FieldType`` of field ``f`` of dataclass ``cls`` (``X | None``, ``list[X]``, ``tuple[X, ...]``)."""
    hint = typing.get_type_hints(cls)[f.name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{f.name}: only 'X | None' unions are supported")
        hint, optional = args[0], True
    container = None
    if typing.get_origin(hint) in (list, tuple, Sequence):
        container = tuple if typing.get_origin(hint) is tuple else list
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        hint = args[0] if args else str
    if hint not in SCALARS and typing.get_origin(hint) is not Literal and not dataclasses.is_dataclass(hint):
        raise TypeError(f"{cls.__name__}.{f.name}: type {hint!r} is not supported by the schema")
    return FieldType(hint, optional, container)


def cli_options(f: dataclasses.Field) -> dict[str, Any]:
    """The field's ``cli`` metadata (see the module docstring)."""
    return dict(f.metadata.get("cli", {}))


def is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def apply_sentinel(f: dataclasses.Field, value: Any) -> Any:
    """None for a value at or below the field's ``none_at_or_below`` sentinel; the value otherwise."""
    threshold = cli_options(f).get("none_at_or_below")
    return None if threshold is not None and value is not None and value <= threshold else value
