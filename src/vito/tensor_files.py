"""Reading files of tensors (checkpoints, weights, heads, feature caches): one reader, one kind of message.

Why one: every ``.pt`` vito reads is loaded with ``weights_only=True`` (tensors and plain values, nothing executed),
and what goes wrong should read the same everywhere. Torch's refusal of a file that holds code or Python objects
ends "re-running with weights_only=False will likely succeed", advice vito never follows: it says instead what the
file holds and that vito will not load it. A damaged ``.safetensors`` file is a ``VitoError`` too, not a
``SafetensorError`` traceback.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vito.errors import VitoError


class UnreadableTensorFile(VitoError):
    """A file of tensors that cannot be read (empty, truncated, foreign, or holding code)."""


def load_tensor_file(path: str | Path, what: str) -> Any:
    """The contents of a ``torch.save`` file (``weights_only``) or a ``.safetensors`` file; ``what`` names the
    kind of file in messages ("checkpoint", "weights file")."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise UnreadableTensorFile(f"{path} is not a readable {what} (safetensors: {error})") from error
    if path.stat().st_size == 0:
        raise UnreadableTensorFile(f"{path} is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # a class or function to import: code, not data
            raise UnreadableTensorFile(f"{path} holds code or Python objects, not only tensors: vito will not load "
                                       f"it (a {what} is read with weights_only=True)") from None
        raise UnreadableTensorFile(f"{path} is not a readable {what}: {_unpickler_detail(error)}") from None
    except Exception as error:  # truncated zips and foreign formats fail in many types
        raise UnreadableTensorFile(f"{path} is not a readable {what}: {_first_line(error)}") from error


def _unpickler_detail(error: BaseException) -> str:
    """What torch's weights-only unpickler found, without its advice to load the file unsafely."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    detail = text[text.index(marker) + len(marker):] if marker in text else text
    return _first_line(Exception(detail.strip()))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
