"""Outside models (timm or torchvision architectures) with weights from a local file.

vito never downloads: an outside checkpoint is an architecture name plus a file the user already has.
Used by curation (an ImageNet classifier) and by evaluation (baselines such as a supervised ResNet-50).

The command line reads ``SPEC_HELP`` from here for every ``--help``, so torch, timm and torchvision are
imported inside the functions that need them: loading them is most of the start-up of a bare ``vito --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vito.errors import VitoError

if TYPE_CHECKING:
    import torch
    from torch import nn

SPEC_HELP = "timm:NAME (any timm model) or torchvision:NAME (e.g. torchvision:resnet50)"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``timm:resnet50`` into ``("timm", "resnet50")``; raise VitoError on anything else."""
    library, sep, name = spec.partition(":")
    if not sep or library not in ("timm", "torchvision") or not name:
        raise VitoError(f"model spec {spec!r} is not of the form {SPEC_HELP}")
    return library, name


def create_architecture(spec: str, num_classes: int = 1000) -> nn.Module:
    """Build the architecture with random weights (never fetches pretrained weights).

    timm transformers (Swin, ViT) are built with ``dynamic_img_size=True`` where the architecture offers it:
    the same weights then run at any input size (a multiple of the patch size), which the dense fine-tunes
    need (crops of 512, test images of 2048 x 512); architectures without the option (ResNets) ignore it.
    """
    import timm  # kept out of `vito --help` (see the module docstring)
    import torchvision

    library, name = parse_spec(spec)
    if library == "timm":
        if not timm.is_model(name):
            raise VitoError(f"timm has no model named {name!r}")
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, dynamic_img_size=True)
        except TypeError:  # "unexpected keyword argument": a convolutional net, which runs at any size anyway
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as error:
        raise VitoError(f"torchvision has no model named {name!r}") from error
    return builder(weights=None, num_classes=num_classes)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state dict (``.pt``/``.pth`` via ``weights_only`` loading, or ``.safetensors``).

    Common wrappers are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}`` and DDP ``module.`` prefixes.
    """
    import torch  # kept out of `vito --help` (see the module docstring)

    from vito.tensor_files import load_tensor_file  # it imports torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = load_tensor_file(path, "PyTorch weights file")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VitoError(f"{path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_external_model(spec: str, weights: str | Path | None) -> nn.Module:
    """An outside classifier in eval mode; ``weights=None`` keeps the random initialisation (a baseline)."""
    model = create_architecture(spec)
    if weights is not None:
        state = read_state_dict(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise VitoError(f"weights in {weights} do not fit {spec}: {error}") from error
    return model.eval()
