"""The frame-skipping plan on constructed packet streams (tests/data/test_video.py runs it on real videos, and
checks it against decoding every frame)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vito.data.sparse_decode import packets_through, plan_stamps


def packet(pts, dts, discard=False, size=100):
    return SimpleNamespace(pts=pts, dts=dts, is_discard=discard, size=size)


def stream(packets, b_frames=True):
    container = SimpleNamespace(demux=lambda _: iter(packets))
    return container, SimpleNamespace(codec_context=SimpleNamespace(has_b_frames=b_frames))


def seconds(stamp):
    return np.asarray(stamp) / 10.0  # stamps in tenths of a second, the first frame at 0


def test_demuxing_stops_once_the_decode_stamps_pass_the_last_time():
    packets = [packet(0, -1), packet(2, 0), packet(1, 1), packet(4, 2), packet(3, 3), packet(5, 4)]
    assert packets_through(*stream(packets), 0.15, seconds) == packets[:4]  # dts 0.2 s is the first past 0.15 s


def test_streams_whose_stamps_cannot_name_the_frames_are_left_to_the_full_decode():
    assert packets_through(*stream([packet(0, 0), packet(None, 1)]), 1.0, seconds) is None
    assert packets_through(*stream([packet(0, 0), packet(1, 1)], b_frames=True), 1.0, seconds) is None  # no reorder
    assert packets_through(*stream([packet(0, 0, discard=True)]), 1.0, seconds) is None
    kept = [packet(0, 0), packet(1, 1)]
    assert packets_through(*stream(kept + [packet(9, 9, size=0)], b_frames=False), 1.0, seconds) == kept


def test_each_time_gets_the_frame_on_screen_then():
    packets = [packet(0, -1), packet(3, 0), packet(1, 1), packet(2, 2), packet(5, 3, discard=True)]
    plan = plan_stamps(packets, np.array([0.0, 0.15, 0.3, 0.9]), seconds, start_pts=0)
    assert plan == {0.0: 0, 0.15: 1, 0.3: 3, 0.9: 3}  # the discarded packet shows nothing


def test_a_time_before_the_first_frame_here_needs_an_earlier_seek_unless_the_stream_starts_here():
    packets = [packet(12, 10), packet(11, 11)]  # an open GOP: frame 11 is shown before the keyframe 12
    assert plan_stamps(packets, np.array([1.05]), seconds, start_pts=0) is None
    assert plan_stamps(packets, np.array([1.05]), seconds, start_pts=11) == {1.05: 11}
