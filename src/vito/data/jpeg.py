"""JPEG files as training shards store them: the header check, and the codec (simplejpeg, else OpenCV).

Why a header parser of our own: a loader worker that hands undecoded frames to the training device
(``vito.data.gpu_decode``) must still find a damaged frame in the worker, where it is a counted skip, not in
the batched device decode, where it would stop the run. Reading the frame header is enough for that and
costs microseconds; the entropy-coded data is checked by the decode that follows.
"""

from __future__ import annotations

import cv2
import numpy as np

try:  # the fastest JPEG codec from Python; a machine without it (e.g. a bare GPU box) decodes with OpenCV
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a core dependency
    simplejpeg = None

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic coded)
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, after checking the file's structure: start of image,
    a frame header before the first scan, and an end of image marker at the end (a truncated or foreign file
    raises ``ValueError``). The entropy-coded data itself is not checked: that takes a decode."""
    view = memoryview(data).cast("B")
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise ValueError("not a JPEG (no start-of-image marker)")
    if view[-2] != 0xFF or view[-1] != 0xD9:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    position = 2
    while position + 4 <= len(view):
        if view[position] != 0xFF:
            raise ValueError(f"corrupt JPEG header at byte {position}")
        marker = view[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = view[position + 2] << 8 | view[position + 3]
        if marker in _SOF_MARKERS and position + 9 <= len(view):
            height = view[position + 5] << 8 | view[position + 6]
            width = view[position + 7] << 8 | view[position + 8]
            if height == 0 or width == 0:
                raise ValueError("JPEG frame header with an empty image")
            return height, width
        if marker == 0xDA or length < 2:  # a scan before any frame header, or a broken segment
            break
        position += 2 + length
    raise ValueError("corrupt JPEG header (no frame header before the image data)")


def decode_jpeg(data: bytes | memoryview, out: np.ndarray | None = None,
                min_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB, written into ``out`` when given (it must have the image's size); with ``min_size``
    (height, width), decoded at the smallest DCT scale at least that large. ``ValueError`` when corrupt.

    simplejpeg (libjpeg-turbo) where it is installed; OpenCV's decoder otherwise (no DCT scaling).
    """
    if simplejpeg is not None:
        height, width = min_size or (0, 0)
        return simplejpeg.decode_jpeg(data, "rgb", min_height=height, min_width=width, buffer=out)
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 converts while decoding
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR if rgb is None else rgb)
    if image is None:
        raise ValueError("cannot decode JPEG")
    if rgb is None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if out is not None:
        out[...] = image
        return out
    return image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG (4:2:0 chroma) of uint8 [H, W, 3] RGB: simplejpeg where installed, OpenCV otherwise."""
    image = np.ascontiguousarray(image)
    if simplejpeg is not None:
        return simplejpeg.encode_jpeg(image, quality, "rgb", "420")
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode JPEG")
    return data.tobytes()
