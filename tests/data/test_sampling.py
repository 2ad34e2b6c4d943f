from __future__ import annotations

import numpy as np
import pytest

from vito.data.sampling import sample_times


def draws(scheme, n=4000, duration=30.0, views=3, window=2.56, delta=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([sample_times(duration, views, window, scheme, delta, rng) for _ in range(n)])


@pytest.mark.parametrize("scheme", ["marginal", "uniform", "delta", "same"])
@pytest.mark.parametrize("duration", [30.0, 2.0, 0.5, 0.0])
def test_times_inside_video(scheme, duration):
    times = draws(scheme, n=300, duration=duration)
    assert times.shape == (300, 3)
    assert times.min() >= 0 and times.max() <= duration


def test_marginal_differences_peak_at_zero():
    times = draws("marginal")
    diffs = np.abs(times[:, 0] - times[:, 1])
    counts, _ = np.histogram(diffs, bins=8, range=(0, 2.56))
    assert counts.argmax() == 0 and counts[0] > 2 * counts[-1]  # triangular: mode at 0
    assert diffs.max() <= 2.56
    spans = np.ptp(times, axis=1)
    assert spans.max() <= 2.56 and spans.max() > 2.3  # window length respected and used


def test_uniform_one_time_per_chunk():
    window, views = 2.56, 3
    # a video exactly one window long pins the window at 0, so the chunks are known
    times = draws("uniform", n=1000, duration=window, window=window, views=views)
    chunk = np.floor(times / (window / views))
    assert np.array_equal(chunk, np.broadcast_to(np.arange(views), times.shape))
    # differences between neighbours are never near 0 more often than chance: no mode at 0
    diffs = np.diff(draws("uniform"), axis=1).ravel()
    counts, _ = np.histogram(diffs, bins=8, range=(0, 2 * window / views))
    assert counts.argmax() not in (0, 7)


def test_delta_fixed_gaps_and_shrinking():
    times = draws("delta", n=500, delta=1.0)
    np.testing.assert_allclose(np.diff(times, axis=1), 1.0)
    assert times[:, 0].min() < 2 and times[:, 0].max() > 26  # start spread over the whole video
    short = draws("delta", n=200, duration=1.0, delta=1.0)  # (V-1)*delta = 2 > 1: gap becomes 0.5
    np.testing.assert_allclose(np.diff(short, axis=1), 0.5)


def test_same_and_short_videos():
    times = draws("same", n=200)
    assert np.all(times == times[:, :1])
    short = draws("marginal", n=500, duration=1.0)  # window shrinks to the whole video
    assert short.min() >= 0 and short.max() <= 1.0 and np.ptp(short) > 0.9


def test_reproducible_and_validated():
    assert np.array_equal(draws("marginal", n=5, seed=3), draws("marginal", n=5, seed=3))
    with pytest.raises(ValueError, match="scheme"):
        sample_times(10, 3, 2.56, "random", 1.0, np.random.default_rng(0))
