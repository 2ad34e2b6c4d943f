"""The one image reader and the one index-mask reader: every mode read as RGB (16-bit greys scaled), every
unreadable file one ``UnreadableImage`` (a ``DataError``) naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import UNREADABLE, unreadable
from tests.helpers import png_header
from vito.data.images import (
    UnreadableImage,
    dct_scale,
    read_image,
    read_index_png,
    read_index_png_and_mode,
    read_rgb,
    read_rgb_and_size,
)
from vito.errors import DataError


def test_sixteen_bit_greys_are_scaled_not_saturated(tmp_path):
    Image.fromarray(np.full((4, 5), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    rgb = read_rgb(tmp_path / "grey16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 5, 3) and (rgb == 128).all()  # not 255


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGBA", "1", "I;16", "CMYK"])
def test_every_mode_is_read_as_rgb(tmp_path, mode):
    source = Image.new("RGB", (6, 4), (200, 120, 40))
    path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    source.convert(mode).save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable


def test_a_cmyk_jpeg_keeps_its_colours(tmp_path):
    Image.new("RGB", (16, 8), (200, 40, 10)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(read_rgb(tmp_path / "cmyk.jpg").reshape(-1, 3).mean(0) - (200, 40, 10)).max() < 8


def test_a_one_pixel_image_is_read(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    assert read_image(tmp_path / "dot.png").tolist() == [[[255]], [[0]], [[0]]]


def test_the_tensor_is_the_array_channels_first(tmp_path):
    Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3)).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    array = torch.from_numpy(read_rgb(tmp_path / "x.png"))
    assert image.shape == (3, 2, 4) and torch.equal(image.permute(1, 2, 0), array)


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_image_is_one_data_error_naming_the_file(tmp_path, kind):
    path = unreadable(kind, tmp_path / "x.png")
    with pytest.raises(UnreadableImage, match=f"cannot read image {path}: .*{UNREADABLE[kind]}") as error:
        read_rgb(path)
    assert isinstance(error.value, DataError) and "\n" not in str(error.value)


def test_an_image_over_the_pixel_limit_is_refused_below_twice_it_too(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: PIL would only warn
    with pytest.raises(UnreadableImage, match="decompression-bomb-sized image .*decompression bomb"):
        read_image(tmp_path / "big.png", "frame")
    with pytest.raises(UnreadableImage, match="cannot read mask"):
        read_index_png(png_header(tmp_path / "mask.png", 20000, 20000))


@pytest.mark.parametrize("mode", ["P", "L"])
def test_index_pngs_keep_their_values(tmp_path, mode):
    values = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)
    image = Image.fromarray(values, "L")
    if mode == "P":
        image.putpalette(list(range(256)) * 3)  # the palette is ignored: the indices are the classes
    assert image.mode == mode
    image.save(tmp_path / "mask.png")
    indices = read_index_png(tmp_path / "mask.png", "ground-truth mask")
    assert indices.dtype == np.int64 and indices.tolist() == values.tolist()


def test_index_pngs_in_other_modes_or_over_eight_bits_are_refused(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "colour.png")
    with pytest.raises(UnreadableImage, match=r"cannot read prediction .*colour\.png: mode RGB, not an index PNG"):
        read_index_png(tmp_path / "colour.png", "prediction")
    Image.fromarray(np.array([[0, 200]], dtype=np.uint16)).save(tmp_path / "narrow.png")
    assert read_index_png(tmp_path / "narrow.png", modes=("I;16", "I")).tolist() == [[0, 200]]
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(UnreadableImage, match="values up to 300 are not 8-bit indices"):
        read_index_png(tmp_path / "wide.png", modes=("I;16", "I"))
    Image.new("1", (3, 2), 1).save(tmp_path / "binary.png")
    indices, mode = read_index_png_and_mode(tmp_path / "binary.png", modes=("P", "L", "1"))
    assert mode == "1" and indices.tolist() == [[1, 1, 1], [1, 1, 1]]


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_mask_is_one_data_error_naming_the_file(tmp_path, kind):
    path = unreadable(kind, tmp_path / "x.png")
    with pytest.raises(UnreadableImage, match=f"cannot read mask {path}: .*{UNREADABLE[kind]}"):
        read_index_png(path)


def test_jpegs_are_the_pixels_pil_decodes_also_at_a_reduced_scale(shared_data, tmp_path):
    """The simplejpeg path is a speed-up only: real ImageNet JPEGs (colour and grey) come back as PIL decodes
    them, bit for bit; with ``min_short_side`` a large one comes back at PIL's scaled decode (draft)."""
    everything = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))
    files = everything[::10] + [path for path in everything if Image.open(path).mode == "L"]  # 7 grey ones
    modes = set()
    for path in files:
        with Image.open(path) as image:
            modes.add(image.mode)
            expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(read_rgb(path), expected), path
    assert modes == {"RGB", "L"}
    large = next(path for path in files if min(Image.open(path).size) >= 512)
    with Image.open(large) as image:
        width, height = image.size
        image.draft("RGB", (width // 2, height // 2))
        expected = np.asarray(image.convert("RGB"))
    pixels, size = read_rgb_and_size(large, min_short_side=min(width, height) // 2)
    assert size == (width, height) and pixels.shape[:2] == (-(-height // 2), -(-width // 2))
    assert np.array_equal(pixels, expected)
    Image.new("RGB", (600, 500), (200, 40, 10)).convert("CMYK").save(tmp_path / "cmyk.jpg")  # PIL's own path
    assert read_rgb(tmp_path / "cmyk.jpg", min_short_side=200).shape == (250, 300, 3)


def test_the_dct_scale_keeps_the_short_side_at_least_the_minimum():
    assert [dct_scale((500, 375), side) for side in (None, 0, 375, 187, 94, 46, 40, 376)] == [1, 1, 1, 2, 2, 8, 8, 1]
    assert dct_scale((1, 1), 32) == 1
