"""`vito demo` end to end with a few steps: renders its videos, trains, evaluates, draws, reports."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from vito.demo import FPS, NUM_SCENES, SIZE, make_scene, nearest_neighbour_accuracy, render_frame, render_videos


def test_scenes_are_distinct_and_move() -> None:
    first, later = render_frame(make_scene(0), 0.0), render_frame(make_scene(0), 1.0)
    other = render_frame(make_scene(1), 0.0)
    assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - later).mean() > 5  # objects, camera and light move
    assert np.abs(first.astype(int) - other).mean() > 20  # another scene looks different
    assert np.array_equal(first, render_frame(make_scene(0), 0.0))  # deterministic


def test_rendered_videos_are_h264_with_a_held_out_segment(tmp_path: Path) -> None:
    train, heldout = render_videos(tmp_path, num_scenes=2)
    assert [p.parent.name for p in train + heldout] == ["train", "train", "heldout", "heldout"]
    for path, seconds in [(train[0], 7.0), (heldout[0], 3.0)]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (SIZE, SIZE)
        assert frames == int(seconds * FPS)


def test_nearest_neighbour_accuracy() -> None:
    bank = np.eye(3, dtype=np.float32)
    import torch

    queries = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.5, 0.0]])
    labels = torch.tensor([0, 2, 1])
    assert nearest_neighbour_accuracy(queries, labels, torch.from_numpy(bank), torch.arange(3)) == pytest.approx(2 / 3)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys) -> None:
    from vito.cli import main

    assert main(["demo", "--out", str(tmp_path), "--max-steps", "4", "data.batch_size=8"]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"] == 4 and result["chance"] == 1 / NUM_SCENES
    assert 0.0 <= result["random_init"] <= 1.0 and 0.0 <= result["trained"] <= 1.0
    for name in ("loss_curve.png", "attention.png", "checkpoints/last.pt", "config.yaml", "train.log"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert "scene retrieval accuracy" in capsys.readouterr().out
