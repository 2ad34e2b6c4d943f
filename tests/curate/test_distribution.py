"""The class-distribution picture: the curated classes must be visible, however few they are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vito.curate.distribution import kl_to_uniform, plot_class_distribution

TAB_BLUE = np.array([31, 119, 180])  # matplotlib's "tab:blue", the curated bars


def blue_fraction(path) -> float:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return float((np.abs(image - TAB_BLUE).sum(axis=-1) < 30).mean())


@pytest.mark.parametrize("kept_classes", [1, 5, 1000])
def test_kept_classes_are_visible_against_uniform(tmp_path, kept_classes):
    counts = np.zeros(1000, dtype=np.int64)
    counts[:kept_classes] = 7
    plot_class_distribution(counts, tmp_path / "d.png")
    assert blue_fraction(tmp_path / "d.png") > 0.02  # a bar of 1/1000 of a linear axis would be < 0.2 %


def test_kl_to_uniform():
    assert kl_to_uniform(np.full(1000, 3)) == pytest.approx(0.0)
    one = np.zeros(1000)
    one[3] = 5
    assert kl_to_uniform(one) == pytest.approx(np.log(1000))
