from __future__ import annotations

import av
import numpy as np
import pytest

from tests.data.conftest import decode_index
from vito.data.video import iter_frames, probe_video, read_frames
from vito.errors import DataError


def expected_index(pts_ms: list[int], t: float) -> int:
    """The frame on screen at t seconds: the last one whose timestamp (from the first) is <= t."""
    stamps = (np.asarray(pts_ms) - pts_ms[0]) / 1000
    return max(int(np.searchsorted(stamps, t, side="right")) - 1, 0)


def check_times(path, pts_ms, times, short_side=None):
    frames = read_frames(path, times, short_side=short_side)
    assert frames.dtype == np.uint8 or str(frames.dtype) == "torch.uint8"
    got = [decode_index(f.numpy()) for f in frames]
    assert got == [expected_index(pts_ms, t) for t in times]
    return frames


def off_boundary(times, pts_ms):
    """Drop times within 2 ms of a frame change, where rounding to the container's clock decides."""
    stamps = (np.asarray(pts_ms) - pts_ms[0]) / 1000
    return [t for t in times if np.min(np.abs(stamps - t)) > 2e-3]


def test_b_frames_random_times_exact(make_video):
    pts = [k * 40 for k in range(60)]  # 25 fps, 2.4 s, keyframe every 12 frames, 2 B-frames
    path = make_video("bframes.mp4", pts_ms=pts, b_frames=2, gop=12)
    with av.open(str(path)) as container:  # the fixture really has B-frames (decode order != display order)
        packets = [p for p in container.demux(container.streams.video[0]) if p.pts is not None]
        assert any(p.pts != p.dts for p in packets)
    times = off_boundary(np.random.default_rng(0).uniform(0, 2.5, 40), pts)
    check_times(path, pts, times)
    # requested order is kept, duplicates and far-apart times (separate seeks) are fine
    check_times(path, pts, [2.3, 0.01, 2.3, 1.21, 0.5])


def test_variable_frame_rate_exact(make_video):
    gaps = np.random.default_rng(1).choice([20, 40, 100, 250], size=59)  # ms, irregular
    pts = [0, *np.cumsum(gaps).tolist()]
    path = make_video("vfr.mp4", pts_ms=pts, b_frames=2, gop=10)
    end = pts[-1] / 1000
    times = off_boundary(np.random.default_rng(2).uniform(0, end + 0.5, 60), pts)
    frames = check_times(path, pts, times, short_side=48)
    assert frames.shape[1:] == (48, 64, 3)  # short side resized, aspect kept


def test_clamps_outside_the_video(make_video):
    pts = [k * 40 for k in range(25)]
    path = make_video("clamp.mp4", pts_ms=pts)
    frames = read_frames(path, [-1.0, 0.0, 100.0])
    assert [decode_index(f.numpy()) for f in frames] == [0, 0, 24]


def test_probe_rendered(make_video):
    path = make_video("probe.mp4", num_frames=50, fps=25)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (128, 96, 50)
    assert info.fps == pytest.approx(25)
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_iter_frames_in_order(make_video):
    path = make_video("iter.mp4", num_frames=30)
    frames = list(iter_frames(path, max_frames=10, short_side=48))
    assert [decode_index(f.numpy()) for f in frames] == list(range(10))


@pytest.mark.parametrize("name", ["mmaction2/test.mp4", "imageio/test.webm", "mmaction2/demo.mp4"])
def test_shared_video_matches_decode_from_start(shared_videos, name):
    path = shared_videos / name
    info = probe_video(path)
    if name.endswith(".webm"):
        assert info.duration == pytest.approx(3.137, abs=0.05)  # no header duration: from the last packet
    times = [0.0, info.duration * 0.37, info.duration * 0.8, info.duration * 0.81]
    got = read_frames(path, times, short_side=64)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float((f.pts - decoded_start) * stream.time_base), f) for f in container.decode(stream)
                   for decoded_start in [stream.start_time or 0]]
    for t, frame in zip(times, got):
        reference = [f for stamp, f in decoded if stamp <= t + 1e-9][-1]
        expected = reference.reformat(frame.shape[1], frame.shape[0], format="rgb24").to_ndarray()
        assert np.array_equal(frame.numpy(), expected), f"{name} at {t:.3f} s"


def test_bad_files_raise_data_error(tmp_path, shared_videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(50_000))
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 100)
    truncated = tmp_path / "truncated.mp4"  # its index (moov) is at the start, so it opens
    data = (shared_videos / "sam2/04_coffee.mp4").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path, reason in [(empty, "empty"), (noise, None), (text, None), (truncated, "truncated"), (tmp_path / "nope.mp4", "not found")]:
        with pytest.raises(DataError, match=reason) as info:
            read_frames(path, [0.1])
        assert str(path) in str(info.value)


def test_still_image_is_not_a_video(tmp_path):
    from PIL import Image

    path = tmp_path / "picture.mp4"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, format="PNG")
    with pytest.raises(DataError, match="still image"):
        probe_video(path)
