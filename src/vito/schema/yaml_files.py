"""YAML files, read one way: each key once, ``1e-5`` a number, errors naming the file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any

import yaml

from vito.schema.errors import SchemaError


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes every vito file gets.

    A key given twice in one mapping is an error: PyYAML keeps the last value silently, so a config or suite
    naming ``batch_size`` (or an encoder) twice would quietly drop one of them. And ``1e-5`` is a float, as in
    YAML 1.2 and as every user expects (YAML 1.1 made it a string because its float pattern demands a dot).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor": merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first given at line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python values; a syntax error is a ``SchemaError`` naming the line (and tabs, a common cause)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        hint = "; YAML does not allow tabs for indentation, use spaces" if "\t" in text and "\t" in str(error) else ""
        raise SchemaError(f"{where}: not valid YAML{at}: {problem}{hint}") from error


def read_yaml(path: str | Path, what: str = "") -> Any:
    """A YAML file's values; a missing, unreadable or non-UTF-8 file is a ``SchemaError`` naming it."""
    path = Path(path)
    label = f"{what} {path}".strip()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{label}: file not found") from None
    except UnicodeDecodeError as error:
        raise SchemaError(f"{label}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                          f"{error.start}); save it as UTF-8") from error
    except OSError as error:
        raise SchemaError(f"{label}: cannot read it ({error.strerror or error})") from error
    return parse_yaml(text, label)


def dump_yaml(data: Any, handle: IO[str], sort_keys: bool = False) -> None:
    """Write plain values (a run's resolved config) as YAML that :func:`parse_yaml` reads back unchanged."""
    yaml.safe_dump(data, handle, sort_keys=sort_keys)
