"""The guides ship with the package (``vito docs``), so every message that points to one can be followed from
any install, a wheel included."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from vito.cli import DOCS_DIR, doc_pages, main

SRC = Path(__file__).resolve().parents[1] / "src" / "vito"


def test_every_guide_a_message_names_exists() -> None:
    named = {m for path in SRC.rglob("*.py") for m in re.findall(r"`vito docs (\w+)`", path.read_text())}
    assert named and named <= set(doc_pages()), named - set(doc_pages())
    repo_docs = {p.stem for p in (SRC.parents[1] / "docs").glob("*.md")}
    assert set(doc_pages()) == repo_docs  # the packaged folder is the repository's docs/


def test_vito_docs_lists_prints_and_refuses(capsys) -> None:
    assert main(["docs"]) == 0
    listing = capsys.readouterr().out
    assert "cluster" in listing and "Pretraining on a cluster" in listing
    assert main(["docs", "cluster"]) == 0
    assert capsys.readouterr().out == (DOCS_DIR / "cluster.md").read_text()
    assert main(["docs", "clusters"]) == 2
    assert "no guide named 'clusters'; the guides: architecture" in capsys.readouterr().err


def test_a_wheel_carries_the_guides(tmp_path: Path) -> None:
    repo, copy = SRC.parents[1], tmp_path / "vito"  # built from a copy: a build writes build/ beside the sources
    for part in ("src", "docs"):
        shutil.copytree(repo / part, copy / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, copy / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(copy)], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("vito-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"vito/docs/{page}.md" for page in doc_pages()} <= names
    assert not any(name.startswith(("vito/assets", "vito/curate/")) and name.endswith(".txt") for name in names)
