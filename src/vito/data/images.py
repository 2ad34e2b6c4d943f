"""Opening image files safely: a decompression bomb is an error, never gigabytes of decoded pixels.

PIL warns (``DecompressionBombWarning``) above ``Image.MAX_IMAGE_PIXELS`` and refuses only above twice that;
every image reader in vito (evaluation images, segmentation images and masks, DAVIS frames) opens files
inside ``bombs_are_errors()`` and treats ``BOMBS`` like any other unreadable file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@contextmanager
def bombs_are_errors() -> Iterator[None]:
    """Inside, PIL's ``DecompressionBombWarning`` (over ``Image.MAX_IMAGE_PIXELS``) is raised, like the
    ``DecompressionBombError`` over twice that: every reader catches ``BOMBS`` instead of decoding gigabytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield
