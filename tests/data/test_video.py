from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from tests.data.conftest import decode_index, index_image
from vito.data import video
from vito.data.sources import find_videos
from vito.data.video import VideoReader, iter_frames, probe_video, read_frames
from vito.errors import DataError


@pytest.fixture(params=["skipping", "full"])
def decode_path(request, monkeypatch) -> str:
    """Run a test with the frame-skipping decode and again with every frame decoded (its fallback)."""
    if request.param == "full":
        monkeypatch.setattr(video, "SKIPPING_CODECS", frozenset())
    return request.param


@pytest.fixture
def decode_calls(monkeypatch) -> dict[str, int]:
    """Counts of the frame-skipping decodes ("skipping") and the every-frame decodes ("full")."""
    calls = {"skipping": 0, "full": 0}
    for name, method in [("skipping", "_decode_stamps"), ("full", "_decode_until")]:
        original = getattr(VideoReader, method)

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(VideoReader, method, counted)
    return calls


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


def test_b_frames_random_times_exact(make_video, decode_path):
    pts = [k * 40 for k in range(60)]  # 25 fps, 2.4 s, keyframe every 12 frames, 2 B-frames
    path = make_video("bframes.mp4", pts_ms=pts, b_frames=2, gop=12)
    with av.open(str(path)) as container:  # the fixture really has B-frames (decode order != display order)
        packets = [p for p in container.demux(container.streams.video[0]) if p.pts is not None]
        assert any(p.pts != p.dts for p in packets)
    times = off_boundary(np.random.default_rng(0).uniform(0, 2.5, 40), pts)
    check_times(path, pts, times)
    # requested order is kept, duplicates and far-apart times (separate seeks) are fine
    check_times(path, pts, [2.3, 0.01, 2.3, 1.21, 0.5])


def test_matroska_b_frames_fall_back_to_decoding_every_frame(make_video, decode_calls):
    """Matroska stores no decode stamps and FFmpeg cannot infer the first packets' ones, so the reader
    cannot bound which packets hold the wanted frames: it decodes every frame instead, still exactly."""
    pts = [k * 40 for k in range(60)]
    path = make_video("bframes.mkv", pts_ms=pts, b_frames=2, gop=12)
    check_times(path, pts, off_boundary(np.random.default_rng(4).uniform(0, 2.5, 30), pts))
    assert decode_calls["full"] > 0


def test_variable_frame_rate_exact(make_video, decode_path):
    gaps = np.random.default_rng(1).choice([20, 40, 100, 250], size=59)  # ms, irregular
    pts = [0, *np.cumsum(gaps).tolist()]
    path = make_video("vfr.mp4", pts_ms=pts, b_frames=2, gop=10)
    end = pts[-1] / 1000
    times = off_boundary(np.random.default_rng(2).uniform(0, end + 0.5, 60), pts)
    frames = check_times(path, pts, times, short_side=48)
    assert frames.shape[1:] == (48, 64, 3)  # short side resized, aspect kept


def test_clamps_outside_the_video(make_video, decode_path):
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


def test_skipping_is_bit_identical_to_decoding_from_the_start(shared_videos, decode_calls):
    """Every shared video (H.264 with and without B-frames, MP4 and WebM, x264 4:4:4 that needs the stream
    start): frames picked by packet stamps and decoded with unneeded non-reference frames skipped equal, bit
    for bit, the frames shown at those times in a plain decode of the whole stream, for many random times."""
    rng = np.random.default_rng(0)
    entries = find_videos(shared_videos)
    for entry in entries:
        info = probe_video(entry.path)
        scale = 48 / min(info.width, info.height)
        stamps, reference = decode_all(str(entry.path), (round(info.width * scale), round(info.height * scale)))
        calls = [np.sort(rng.uniform(0, info.duration, 3)) for _ in range(4)]
        calls.append(np.array([-1.0, 0.0, stamps[len(stamps) // 2], info.duration + 1.0]))  # clamps, a stamp
        for times in calls:
            got = read_frames(entry.path, times, short_side=48).numpy()
            for t, frame in zip(times, got):
                shown = max(int(np.searchsorted(stamps, t + 1e-9, side="right")) - 1, 0)
                assert np.array_equal(frame, reference[shown]), f"{entry.path.name} at {t:.4f} s"
    assert decode_calls["skipping"] >= 5 * len(entries) and decode_calls["full"] == 0  # all done by skipping


def decode_all(path: str, size: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seconds since the first frame and RGB pixels of every frame, decoded in one pass from the start."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
        frames = [(f.pts, f.reformat(*size, format="rgb24").to_ndarray()) for f in container.decode(stream)]
        time_base = float(stream.time_base)
    pts = np.array([stamp for stamp, _ in frames])
    return (pts - pts[0]) * time_base, [image for _, image in frames]


def test_hevc_b_frames_use_the_skipping_path(tmp_path, decode_calls):
    pts = [k * 40 for k in range(48)]
    path = tmp_path / "hevc.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"x265-params": "bframes=3:keyint=24:log-level=error", "crf": "20"}
        for k, stamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(index_image(k), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:  # B-frames: decode order != display order
        assert any(p.pts != p.dts for p in container.demux(container.streams.video[0]) if p.pts is not None)
    times = off_boundary(np.random.default_rng(3).uniform(0, 2.0, 30), pts)
    check_times(path, pts, times)
    assert decode_calls["skipping"] > 0 and decode_calls["full"] == 0


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


def _rotated_video(path, degrees: int, size=(64, 32)) -> None:
    """Landscape frames (white left quarter) stored with a display matrix turning them ``degrees`` counter-
    clockwise, as phones store portrait video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[:, : size[0] // 4] = 255
        for k in range(10):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize(("degrees", "white"), [(-90, "top"), (90, "bottom"), (180, "right"), (0, "left")])
def test_rotation_side_data_is_applied(tmp_path, degrees, white):
    """A phone's portrait video (rotate 90 clockwise = -90 here) comes out portrait, as players show it."""
    from vito.data.shards.format import ShardSettings
    from vito.data.shards.writer import encode_clip

    path = tmp_path / "phone.mp4"
    _rotated_video(path, degrees)
    portrait = degrees % 180 != 0
    info = probe_video(path)
    assert (info.width, info.height) == ((32, 64) if portrait else (64, 32))
    for frame in [read_frames(path, [0.5])[0], next(iter_frames(path, 1)), read_frames(path, [0.2], 16)[0]]:
        frame = frame.numpy().astype(float)
        h, w = frame.shape[:2]
        assert (h > w) == portrait
        parts = {"top": frame[: h // 8], "bottom": frame[-h // 8 :], "left": frame[:, : w // 8],
                 "right": frame[:, -w // 8 :]}
        assert {name for name, part in parts.items() if part.mean() > 200} == {white}
    assert read_frames(path, [0.2], 16).shape == ((1, 32, 16, 3) if portrait else (1, 16, 32, 3))
    video, _ = encode_clip(str(path), ShardSettings(fps=5, short_side=16))  # prepare stores it as displayed
    assert (video["width"], video["height"]) == (info.width, info.height)
