"""Shared fixtures. Real sample data comes from $VITO_DATA (CI points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vito.demo_world import render_videos

torch.set_num_threads(2)


def _shared_data_root() -> Path | None:
    root = os.environ.get("VITO_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data folder; skips (or fails under VITO_REQUIRE_DATA=1) when it is absent."""
    root = _shared_data_root()
    if root is None:
        message = "shared sample data not found: set VITO_DATA to the shared/data folder"
        if os.environ.get("VITO_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def shared_videos(shared_data: Path) -> Path:
    return shared_data / "videos"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A few short rendered videos (the demo's renderer): training parts only. Shared by the pretraining loop's
    tests in tests/pretrain and the run-folder tests in tests/engine."""
    folder = tmp_path_factory.mktemp("videos")
    render_videos(folder, num_videos=3)
    return folder / "train"
