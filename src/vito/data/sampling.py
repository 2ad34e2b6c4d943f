"""When, inside a video, the views of one training clip are taken (paper §3.1 and its ablations).

A clip window of length ``T = min(window, duration)`` is placed uniformly at random in the video; the V view
times are then drawn inside it according to a scheme:

- ``marginal`` (VITO): each time i.i.d. uniform in the window. Pairwise time differences then have their
  mode at 0, so most pairs are close in time and a few are far apart.
- ``uniform``: the window is cut into V equal chunks and one time is drawn uniformly inside each, returned
  in chunk order (view i comes from chunk i), so views are spread out and never coincide.
- ``delta``: times ``t0 + i * delta``, a fixed gap apart, ``t0`` uniform such that all fit in the video.
  If ``(V - 1) * delta`` exceeds the duration, the gap shrinks to ``duration / (V - 1)`` (a short video
  cannot hold the full gap; this keeps the views as far apart as the video allows).
- ``same``: V copies of one uniform time (image-only MoCLR baseline: views differ only by augmentation).

Pure functions of their arguments and the generator: no I/O, so a batch is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("marginal", "uniform", "delta", "same")


def sample_times(
    duration: float, num_views: int, window: float, scheme: str, delta: float, rng: np.random.Generator
) -> np.ndarray:
    """float64 [num_views] view times in seconds, all within ``[0, duration]``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r} (choose from {', '.join(SCHEMES)})")
    if num_views < 1:
        raise ValueError("num_views must be >= 1")
    duration = max(float(duration), 0.0)
    if scheme == "delta":
        return _delta_times(duration, num_views, delta, rng)
    length = min(float(window), duration)
    start = rng.uniform(0.0, duration - length)
    if scheme == "marginal":
        return start + rng.uniform(0.0, length, size=num_views)
    if scheme == "uniform":
        chunk = length / num_views
        return start + chunk * (np.arange(num_views) + rng.uniform(0.0, 1.0, size=num_views))
    return np.full(num_views, start + rng.uniform(0.0, length))  # "same"


def _delta_times(duration: float, num_views: int, delta: float, rng: np.random.Generator) -> np.ndarray:
    gap = float(delta)
    if num_views > 1 and (num_views - 1) * gap > duration:
        gap = duration / (num_views - 1)
    span = (num_views - 1) * gap
    first = rng.uniform(0.0, max(duration - span, 0.0))
    return np.minimum(first + gap * np.arange(num_views), duration)
