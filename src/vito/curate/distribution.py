"""How far a curated class distribution is from ImageNet's (near-)uniform classes (paper §3.2, §4.3)."""

from __future__ import annotations

import numpy as np


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform) in nats of the class shares ``p``; 0 for a perfectly balanced dataset."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(np.sum(p * np.log(p * len(counts))))
