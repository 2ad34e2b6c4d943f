"""A mapping a user wrote (a YAML config, a suite entry) into a typed dataclass, with one rule set.

The rules, the same for the pretraining config, every evaluation's Settings, encoder entries and suites:
- keys are field names, with ``-`` or ``_`` (``max-videos`` is ``max_videos``, as the flag ``--max-videos``);
  a key the dataclass lacks is an error naming it and the valid keys; a required field left out is an error;
- values already have their type, as YAML gives them: an integer field takes an integer (not ``"3"``, not
  ``true``, not ``3.0``), a number field an integer or a float, a boolean ``true``/``false``, a text field
  text, a path field text; a list field takes a list; a choice field one of its choices; ``null`` only where
  the field may be None; a dataclass field a mapping (a config section), read by the same rules.
Why this strictness: a value in a file is read once and trusted for hours of training; a quoted ``"3"`` or a
``batch-size`` meant for another section must stop the command, not be taken as something near it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from vito.schema.errors import SchemaError
from vito.schema.fields import FieldType, apply_sentinel, field_type, is_required

T = TypeVar("T")


def from_mapping(cls: type[T], mapping: Any, where: str = "", prefix: str = "") -> T:
    """An instance of dataclass ``cls`` from ``mapping``; every problem is a ``SchemaError`` naming the key.

    ``where`` names the source in messages (a file, ``knn``, ``suite.yaml: encoders.a``); ``prefix`` is the
    dotted path of a nested section (``data.``), so a key is named as the user would write it.
    """
    label = prefix.rstrip(".") or where or cls.__name__
    if not isinstance(mapping, Mapping):
        raise SchemaError(f"{_at(where)}{label}: expected a mapping, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given = {_name(key): (key, value) for key, value in mapping.items()}
    refuse_unknown([name for name in given if name not in fields], fields, where, prefix)
    values = {name: _field_value(cls, fields[name], value, prefix + name, where)
              for name, (_, value) in given.items()}
    missing = [name for name, f in fields.items() if name not in values and is_required(f)]
    if missing:
        raise SchemaError(f"{_at(where)}missing key {prefix + missing[0]!r} (required: {', '.join(missing)})")
    return cls(**values)


def refuse_unknown(keys: Iterable[Any], known: Iterable[str], where: str = "", prefix: str = "") -> None:
    """A ``SchemaError`` naming the first of ``keys`` (which are not among ``known``) and the valid keys."""
    keys = sorted(keys, key=str)  # YAML keys may be numbers or null
    if keys:
        raise SchemaError(f"{_at(where)}unknown key {prefix + str(keys[0])!r} (valid: {', '.join(sorted(known))})")


def _name(key: Any) -> Any:
    return key.replace("-", "_") if isinstance(key, str) else key


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _field_value(cls: type, f: dataclasses.Field, value: Any, key: str, where: str) -> Any:
    kind = field_type(cls, f)
    try:
        return apply_sentinel(f, convert(kind, value, key, where))
    except SchemaError as error:
        if where and not str(error).startswith(where):
            raise SchemaError(f"{where}: {error}") from None
        raise


def convert(kind: FieldType, value: Any, key: str, where: str = "") -> Any:
    """``value`` checked against (and, for numbers and paths, converted to) ``kind``."""
    if value is None:
        if kind.optional:
            return None
        raise SchemaError(f"{key}: may not be null")
    if kind.container is not None:
        if not isinstance(value, (list, tuple)):
            raise SchemaError(f"{key}: expected a list, got {value!r}")
        items = [scalar(kind.scalar, item, f"{key}[{i}]", where) for i, item in enumerate(value)]
        return kind.container(items)
    return scalar(kind.scalar, value, key, where)


def scalar(hint: Any, value: Any, key: str, where: str = "") -> Any:
    """One value of type ``hint`` (see the module's rules)."""
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where, prefix=key + ".")
    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint) or isinstance(value, bool) != _is_bool_choice(hint):
            raise SchemaError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SchemaError(f"{key}: expected text, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise SchemaError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    raise TypeError(f"{key}: unsupported type {hint!r}")  # a schema bug, caught by field_type


def _is_bool_choice(hint: Any) -> bool:
    """Whether a ``Literal``'s choices are booleans (``1 in (True,)`` holds in Python; a choice must not)."""
    return all(isinstance(choice, bool) for choice in typing.get_args(hint))
