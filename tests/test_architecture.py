"""The shape of the code base, as contracts: which package may import which, module sizes, one YAML reader,
and the few places that train with ``backward()`` (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vito

SOURCE = Path(vito.__file__).parent

# What each package may import from vito (besides itself): modules depend downward only.
BASE = {"vito.errors", "vito.checks", "vito.io", "vito.tensor_files"}
ALLOWED = {
    "vito.errors": set(),
    "vito.checks": {"vito.errors"},
    "vito.io": {"vito.errors"},
    "vito.tensor_files": {"vito.errors"},
    "vito.schema": BASE,
    "vito.config": BASE | {"vito.schema"},
    "vito.engine": BASE | {"vito.schema"},
    "vito.viz": BASE,
    "vito.objective": BASE,
    "vito.data": BASE | {"vito.config", "vito.engine"},
    "vito.models": BASE | {"vito.config", "vito.objective"},
    "vito.pretrain": BASE | {"vito.schema", "vito.config", "vito.engine", "vito.data", "vito.models",
                             "vito.objective"},
    "vito.curate": BASE | {"vito.engine", "vito.data", "vito.models", "vito.viz"},
    "vito.eval": BASE | {"vito.schema", "vito.config", "vito.engine", "vito.data", "vito.models", "vito.viz"},
    "vito.report": BASE | {"vito.schema", "vito.config", "vito.engine", "vito.pretrain", "vito.eval"},
    "vito.demo": BASE | {"vito.config", "vito.engine", "vito.data", "vito.models", "vito.pretrain", "vito.viz",
                         "vito.demo_world"},
    "vito.demo_world": set(),
}
TOP_LEVEL = {"vito.cli", "vito.__main__", "vito"}  # the command line and the public API may import anything
MAX_LINES = 500


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(path: Path) -> set[str]:
    """Every vito module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "vito" or name.startswith("vito.")}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value))
def test_modules_import_only_downward(module: str, path: Path) -> None:
    package = _package(module)
    if module in TOP_LEVEL or package in TOP_LEVEL:
        return
    allowed = ALLOWED[package] | {package}
    upward = sorted(name for name in _imports(path) if name != "vito" and _package(name) not in allowed)
    assert not upward, f"{module} imports upward: {upward}"


def test_no_module_is_over_500_lines() -> None:
    long = {module: len(path.read_text().splitlines()) for module, path in _modules()}
    assert not {m: n for m, n in long.items() if n > MAX_LINES}


def test_yaml_is_read_and_written_in_one_place() -> None:
    users = sorted(module for module, path in _modules() if "yaml" in {
        alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
        for alias in node.names})
    assert users == ["vito.schema.yaml_files"]
