"""ClickMe's .npz files: odd shapes and image modes read like RGB, broken files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vito.errors import DataError
from vito.eval.human.clickme_data import clickme_files, read_clickme_file


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_clickme_files_in_odd_shapes_and_modes(tmp_path):
    generator = np.random.default_rng(0)
    rgb = generator.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    maps = generator.random((2, 16, 16))
    single = read_clickme_file(_save(tmp_path / "one.npz", image=rgb[0], heatmap=maps[0], label=np.int64(3)))
    assert single["image"].shape == (1, 16, 16, 3) and single["label"].tolist() == [3]
    grey = read_clickme_file(_save(tmp_path / "grey.npz", image=rgb[..., 0], heatmap=maps, label=np.arange(2)))
    assert grey["image"].shape == (2, 16, 16, 3) and (grey["image"][..., 2] == rgb[..., 0]).all()
    rgba = np.concatenate([rgb, np.full((2, 16, 16, 1), 255, np.uint8)], axis=-1)
    assert (read_clickme_file(_save(tmp_path / "rgba.npz", image=rgba, heatmap=maps[..., None],
                                             label=np.arange(2)))["image"] == rgb).all()
    with pytest.raises(DataError, match="label"):
        read_clickme_file(_save(tmp_path / "count.npz", image=rgb, heatmap=maps, label=np.arange(3)))
    with pytest.raises(DataError, match="0..999"):
        read_clickme_file(_save(tmp_path / "range.npz", image=rgb, heatmap=maps, label=np.array([1, 1000])))
    with pytest.raises(DataError, match="image, heatmap and label"):
        read_clickme_file(_save(tmp_path / "keys.npz", image=rgb, label=np.arange(2)))
    with pytest.raises(DataError, match="vito docs clickme"):
        clickme_files(tmp_path / "nowhere")


def test_clickme_empty_truncated_or_corrupt_npz_is_a_data_error(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, image=np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
                        heatmap=np.zeros((2, 8, 8)), label=np.array([1, 2]))
    raw = bytearray(good.read_bytes())
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "truncated.npz").write_bytes(bytes(raw[: len(raw) // 2]))
    raw[200:260] = b"\0" * 60  # inside the compressed image member
    (tmp_path / "corrupt.npz").write_bytes(bytes(raw))
    for name in ("empty", "truncated", "corrupt"):
        with pytest.raises(DataError, match=f"{name}.npz: not a ClickMe .npz"):
            read_clickme_file(tmp_path / f"{name}.npz")
