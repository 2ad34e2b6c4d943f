"""Reading image files: one reader for pictures (evaluation images, segmentation and detection images, DAVIS
frames) and one for class-index masks, with one error type.

Why one: an image that cannot be read must mean the same everywhere. Every failure (missing file, not an image,
truncated, a decompression bomb, a mask in the wrong mode) is an ``UnreadableImage``, a ``DataError`` that names
the file: callers that read many images skip it and count it, the others let it surface as a one-line error.

- Pictures come back as uint8 RGB in any source mode: grey, palette, CMYK, alpha and 1-bit images are
  converted; 16-bit greys are *scaled* to 8 bits (PIL's ``convert("RGB")`` would saturate them to white).
- Masks (``read_index_png``) are class or object indices, not pixels: their values are kept as they are, and
  a colour PNG where an index PNG belongs is refused instead of being read as indices.
- PIL warns (``DecompressionBombWarning``) above ``Image.MAX_IMAGE_PIXELS`` and refuses only above twice that;
  files are opened inside ``bombs_are_errors()``, so a file whose header claims a gigapixel image is refused
  instead of decoded into gigabytes.
- JPEGs in RGB or grey (nearly every photograph) are decoded by libjpeg-turbo straight into an RGB array
  (simplejpeg): the very pixels PIL's decode gives (the same library with the same settings; a test checks
  the shared ImageNet samples bit for bit) at about two thirds of its CPU, which PIL spends on its 4-byte
  internal copy and the conversion to an array. PIL still opens every file first (its header checks and bomb
  check), and decides every file simplejpeg refuses. Pretraining, which reads images at a short side anyway,
  asks for ``min_short_side``: a large JPEG is then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's scaled
  decode, far cheaper than decoding the whole picture to shrink it afterwards).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vito.data.jpeg import simplejpeg
from vito.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what counts as an image file
BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# PIL reports broken files with all three (``UnidentifiedImageError`` is an ``OSError``).
DECODE_ERRORS = (OSError, ValueError, SyntaxError)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MASK_MODES = ("P", "L")  # a class-index PNG: palette (the palette ignored, the indices are the classes) or grey


class UnreadableImage(DataError):
    """An image or mask that cannot be read; the message names the file and why."""


@contextmanager
def bombs_are_errors() -> Iterator[None]:
    """Inside, PIL's ``DecompressionBombWarning`` (over ``Image.MAX_IMAGE_PIXELS``) is raised, like the
    ``DecompressionBombError`` over twice that: every reader catches ``BOMBS`` instead of decoding gigabytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """The PIL image of ``path``; any failure to open or decode it inside the block is an ``UnreadableImage``
    "cannot read {what} {path}: ..." (``what`` says what the file is to the reader of the message)."""
    with _opened(path, what) as (image, _):
        yield image


@contextmanager
def _opened(path: str | Path, what: str) -> Iterator[tuple[Image.Image, bytes]]:
    """``open_image``, and the file's bytes (read once: PIL parses them, simplejpeg may decode them)."""
    path = Path(path)
    if not path.is_file():  # a folder or a FIFO is refused before it is read (a FIFO would block)
        problem = "it does not exist" if not path.exists() else "it is not a regular file"
        raise UnreadableImage(f"cannot read {what} {path}: {problem}")
    try:
        data = path.read_bytes()
    except OSError as error:  # e.g. no permission to read it
        raise UnreadableImage(f"cannot read {what} {path}: {error.strerror or error}") from error
    try:
        with bombs_are_errors(), Image.open(io.BytesIO(data)) as image:
            yield image, data
    except BOMBS as error:
        raise UnreadableImage(f"cannot read {what} {path}: decompression-bomb-sized image ({error})") from error
    except DECODE_ERRORS as error:
        raise UnreadableImage(f"cannot read {what} {path}: it cannot be decoded ({error})") from error


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of any PIL image; 16-bit (and 32-bit integer) grey is scaled by 255/65535."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.array(image.convert("RGB"))  # a copy: writable, detached from PIL's buffer


def read_rgb(path: str | Path, what: str = "image", min_short_side: int | None = None) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of an image file (writable); ``UnreadableImage`` when it cannot be read.

    ``min_short_side``: a JPEG may come back smaller, decoded at a DCT scale of 1/2, 1/4 or 1/8 whose short
    side is still at least this (for readers that shrink the picture to that side anyway); other files, and
    JPEGs too small for a scale, come back at their size.
    """
    return read_rgb_and_size(path, what, min_short_side)[0]


def read_rgb_and_size(path: str | Path, what: str = "image",
                      min_short_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_rgb`` and the file's own (width, height): a reader that resizes the picture rounds from this
    size, the same whatever DCT scale ``min_short_side`` allowed."""
    with _opened(path, what) as (image, data):
        size = image.size
        scale = dct_scale(size, min_short_side)
        pixels = _jpeg_pixels(image, data, scale)
        if pixels is None:
            if scale > 1:  # JPEG only (draft does nothing for other formats): PIL's scaled decode
                image.draft(image.mode, (image.width // scale, image.height // scale))
            pixels = to_rgb_array(image)
        return pixels, size


def dct_scale(size: tuple[int, int], min_short_side: int | None) -> int:
    """The largest JPEG DCT scale divisor (1, 2, 4 or 8) leaving the short side of ``size`` at least
    ``min_short_side`` (1 without one). Powers of two only: libjpeg's other scales (3/8, 5/8, ...) take
    its slow, non-SIMD inverse DCT and cost more than decoding at full size."""
    if not min_short_side:
        return 1
    return next((s for s in (8, 4, 2) if min(size) // s >= min_short_side), 1)


def _jpeg_pixels(image: Image.Image, data: bytes, scale: int) -> np.ndarray | None:
    """The RGB array of a JPEG in RGB or grey, decoded by simplejpeg at ``1 / scale``; None for other files
    and for a JPEG simplejpeg refuses (a libjpeg warning is an error there: PIL then decides)."""
    if simplejpeg is None or image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    height, width = -(-image.height // scale), -(-image.width // scale)  # the scaled decode rounds up
    try:
        return simplejpeg.decode_jpeg(data, "rgb", min_height=height, min_width=width)
    except ValueError:
        return None


def read_image(path: str | Path, what: str = "image") -> torch.Tensor:
    """uint8 ``[3, H, W]`` of an image file: ``read_rgb`` as a channels-first tensor (no copy)."""
    return torch.from_numpy(read_rgb(path, what)).permute(2, 0, 1)


def read_index_png(path: str | Path, what: str = "mask", modes: Collection[str] = MASK_MODES) -> np.ndarray:
    """int64 ``[H, W]`` indices of a single-channel PNG in one of ``modes``; ``UnreadableImage`` when it cannot
    be read, is in another mode (a colour PNG) or holds values over 255 (indices are 8-bit)."""
    return read_index_png_and_mode(path, what, modes)[0]


def read_index_png_and_mode(path: str | Path, what: str = "mask",
                            modes: Collection[str] = MASK_MODES) -> tuple[np.ndarray, str]:
    """``read_index_png`` and the file's PIL mode, for readers that tell layouts apart by it (DAVIS-2016 masks
    are grey, DAVIS-2017 ones palette PNGs)."""
    with open_image(path, what) as image:
        if image.mode not in modes:
            raise UnreadableImage(f"cannot read {what} {path}: mode {image.mode}, not an index PNG "
                                  f"(mode {' or '.join(modes)})")
        indices, mode = np.asarray(image, dtype=np.int64), image.mode
    if indices.max(initial=0) > 255:
        raise UnreadableImage(f"cannot read {what} {path}: values up to {indices.max()} are not 8-bit indices")
    return indices, mode
