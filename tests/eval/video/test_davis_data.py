"""DAVIS files: the 2016 and 2017 annotation layouts, and annotations that are not images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import png_header
from vito.errors import DataError
from vito.eval.video.davis_data import find_sequences, read_object_ids, read_png_ids


def test_2016_and_2017_annotation_layouts(tmp_path) -> None:
    grey = np.zeros((4, 4), np.uint8)
    grey[1, 1] = 255
    Image.fromarray(grey, mode="L").save(tmp_path / "2016.png")
    assert read_object_ids(tmp_path / "2016.png").tolist() == (grey // 255).tolist()
    palette = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    image = Image.fromarray(palette, mode="P")
    image.putpalette([0, 0, 0] * 256)
    image.save(tmp_path / "2017.png")
    assert read_object_ids(tmp_path / "2017.png")[0].tolist() == [0, 1, 2, 0]  # void counts as background


def test_grey_annotations_with_several_ids_are_2017_ids(tmp_path) -> None:
    ids = np.array([[0, 1, 2, 255]] * 4, np.uint8)  # a DAVIS-2017 mask saved as grey instead of palette
    Image.fromarray(ids, mode="L").save(tmp_path / "grey_ids.png")
    assert read_object_ids(tmp_path / "grey_ids.png")[0].tolist() == [0, 1, 2, 0]
    assert read_object_ids(tmp_path / "grey_ids.png", layout="2016")[0].tolist() == [0, 0, 0, 1]


def test_davis_decompression_bomb_annotation_is_a_data_error(tmp_path: Path) -> None:
    png_header(tmp_path / "00000.png", 20000, 20000)
    with pytest.raises(DataError, match="cannot read .*00000.png: .*decompression bomb"):
        read_png_ids(tmp_path / "00000.png")


@pytest.mark.parametrize("name", ["../bear", "bear/../../x", "/tmp/bear"])
def test_a_sequence_name_that_leaves_the_dataset_is_refused(tmp_path, name) -> None:
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    (tmp_path / "Annotations" / "480p").mkdir(parents=True)
    with pytest.raises(DataError, match="--sequences: .* is not a plain name"):
        find_sequences(tmp_path, names=[name])
