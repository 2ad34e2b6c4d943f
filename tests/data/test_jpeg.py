"""The one JPEG header parser and codec: sizes read from every kind of frame header, damage found without a decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vito.data.jpeg import decode_jpeg, encode_jpeg, jpeg_size


def _pil_jpeg(width: int, height: int, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 10)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"quality": 20, "subsampling": 0}])
def test_the_size_comes_from_baseline_and_progressive_frame_headers(options):
    assert jpeg_size(_pil_jpeg(37, 5, **options)) == (5, 37)


def test_encode_and_decode_round_trip_at_the_header_size():
    image = np.zeros((24, 40, 3), dtype=np.uint8)
    image[:, 20:] = 255
    data = encode_jpeg(image, 95)
    assert jpeg_size(data) == (24, 40)
    decoded = decode_jpeg(data)
    assert decoded.shape == (24, 40, 3) and np.abs(decoded.astype(int) - image).mean() < 8
    out = np.empty((24, 40, 3), dtype=np.uint8)
    assert np.shares_memory(decode_jpeg(memoryview(data), out=out), out) and np.array_equal(out, decoded)


def test_fill_bytes_before_a_marker_are_skipped():
    data = _pil_jpeg(8, 6)
    assert jpeg_size(data[:2] + b"\xff\xff" + data[2:]) == (6, 8)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:-10], "truncated"),
    (lambda d: b"\x00" * 100, "not a JPEG"),
    (lambda d: b"", "not a JPEG"),
    (lambda d: b"\xff\xd8\xff\xda\x00\x02" + d[-2:], "no frame header"),  # a scan before any frame header
    (lambda d: d[:2] + b"\x00" + d[3:], "corrupt JPEG header at byte 2"),
])
def test_damaged_headers_are_value_errors(damage, message):
    with pytest.raises(ValueError, match=message):
        jpeg_size(damage(_pil_jpeg(8, 6)))


def test_a_frame_header_with_no_pixels_is_refused():
    data = bytearray(_pil_jpeg(8, 6))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\x00\x00\x00\x08"  # height 0
    with pytest.raises(ValueError, match="empty image"):
        jpeg_size(bytes(data))
