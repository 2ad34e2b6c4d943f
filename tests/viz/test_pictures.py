"""Pictures: viz/ is a leaf (the pictures of one benchmark live in its package)."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import vito.viz  # noqa: E402


def test_viz_imports_nothing_from_eval_or_curate() -> None:
    for path in Path(vito.viz.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith(("vito.eval", "vito.curate"))], path.name
