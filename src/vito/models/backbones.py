"""Image encoders: a timm ``features_only`` network that returns the feature maps of chosen stages.

VITO pools the last two ResNet stages (res4 and res5, paper §3.1), so the encoder is asked for several
stages at once. timm already knows every model's stages (``feature_info``); we only pick indices, make the
output NCHW for every architecture (timm's Swin returns NHWC), and convert the trained weights back into the
key layouts that timm, torchvision and detectron2 load, so a pretrained encoder leaves vito as a plain file.

timm is imported inside the functions that build models: importing it (with torchvision's model zoo, which it
loads) is most of a bare ``vito --help``'s start-up, and the command line reaches this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vito.errors import VitoError

EXPORT_FORMATS = ("timm", "torchvision", "detectron2")


class Backbone(nn.Module):
    """``forward(images [B,3,H,W]) -> list of NCHW feature maps``, one per chosen stage, shallow to deep.

    ``channels[i]`` and ``reductions[i]`` (stride w.r.t. the input) describe the i-th returned map.
    """

    def __init__(self, name: str, stages: Sequence[int], pretrained: bool = False, **timm_kwargs: Any) -> None:
        import timm  # kept out of `vito --help` (see the module docstring)

        super().__init__()
        if not timm.is_model(name):
            raise VitoError(f"timm has no model named {name!r}")
        num_stages = _num_stages(name, timm_kwargs)
        indices = [s + num_stages if s < 0 else s for s in stages]
        if any(not 0 <= i < num_stages for i in indices) or len(set(indices)) != len(indices):
            raise VitoError(f"stages {list(stages)} are not distinct stages of {name} (it has {num_stages}: 0..{num_stages - 1})")
        self.name = name
        self.stages = sorted(indices)
        self.num_stages = num_stages
        self.body = timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=tuple(self.stages), **timm_kwargs
        )
        self.channels: list[int] = self.body.feature_info.channels()
        self.reductions: list[int] = self.body.feature_info.reduction()
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = self.body(images)
        if self.nhwc:
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        return maps


def create_backbone(name: str, stages: Sequence[int] = (-2, -1), pretrained: bool = False, **timm_kwargs: Any) -> Backbone:
    """A timm encoder returning the maps of ``stages`` (indices into its feature stages; negative = from the end).

    ResNets have 5 stages (stem, res2..res5), so the default ``[-2, -1]`` is res4 + res5 (1024 + 2048 channels
    for a ResNet-50). ``timm_kwargs`` reach ``timm.create_model`` (e.g. ``dynamic_img_size=True`` for Swin).
    """
    return Backbone(name, stages, pretrained=pretrained, **timm_kwargs)


def _num_stages(name: str, timm_kwargs: dict[str, Any]) -> int:
    """Number of feature stages, read from the model on the meta device (no memory, no weights)."""
    import timm  # kept out of `vito --help` (see the module docstring)

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **timm_kwargs)
    except Exception as error:  # timm raises many types for unsupported arguments
        raise VitoError(f"cannot build timm model {name!r}: {error}") from error
    info = getattr(model, "feature_info", None)
    if not info:
        raise VitoError(f"timm model {name!r} does not describe its feature stages (no features_only support)")
    return len(info)


# --------------------------------------------------------------------------------------------------
# Export: the backbone's weights in the layouts other libraries load


def backbone_state_dict(backbone: Backbone, fmt: str = "timm") -> dict[str, Any]:
    """The backbone's weights as another library expects them.

    - ``timm``: ``timm.create_model(backbone.name).load_state_dict(sd, strict=True)`` works. Self-supervised
      training has no classifier, so the classifier weights and bias are **zeros** (logits are all 0 until
      you fit one); layers after the last stage that VITO never uses (e.g. Swin's final norm) keep timm's
      initialisation (identity).
    - ``torchvision`` (ResNets): ``torchvision.models.<name>().load_state_dict(sd, strict=True)`` works.
    - ``detectron2`` (ResNets): the dict written by detectron2's ``convert-torchvision-to-d2.py``,
      ``{"model": {d2_name: numpy array}, "__author__": "vito", "matching_heuristics": True}``, to be pickled
      (``.pkl``); the classifier and batch-norm step counters are left out, as detectron2 has neither.
    """
    if fmt not in EXPORT_FORMATS:
        raise VitoError(f"export format {fmt!r} is not one of {list(EXPORT_FORMATS)}")
    state = _timm_state_dict(backbone)
    if fmt == "timm":
        return state
    _check_torchvision_layout(backbone.name, state)
    if fmt == "torchvision":
        return state
    model = {
        detectron2_name(key): value.detach().cpu().numpy()
        for key, value in state.items()
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked")
    }
    return {"model": model, "__author__": "vito", "matching_heuristics": True}


def _timm_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    import timm  # kept out of `vito --help` (see the module docstring)

    if backbone.stages[-1] != backbone.num_stages - 1:
        raise VitoError(
            f"this {backbone.name} was built up to stage {backbone.stages[-1]} of {backbone.num_stages - 1}: "
            "the later stages were never trained, so it cannot be exported as a whole network"
        )
    full = timm.create_model(backbone.name, pretrained=False)
    # features_only renames nested stage modules "layers.0" -> "layers_0"; map them back.
    renamed = {name.replace(".", "_"): name for name, _ in full.named_modules() if name}
    state = {}
    for key, value in backbone.body.state_dict().items():
        child, _, rest = key.partition(".")
        state[f"{renamed.get(child, child)}.{rest}"] = value.detach().clone()
    classifier = full.get_classifier()
    for prefix, module in full.named_modules():
        if module is classifier:
            for name, param in module.named_parameters():
                state[f"{prefix}.{name}"] = torch.zeros_like(param)
    reference = full.state_dict()
    unknown = sorted(set(state) - set(reference))
    if unknown:
        raise VitoError(f"{backbone.name}: cannot place backbone weights {unknown[:3]} in the timm model")
    for key, value in reference.items():  # post-trunk layers VITO never used (Swin's final norm)
        state.setdefault(key, value)
    return {key: state[key] for key in reference}


def _check_torchvision_layout(name: str, state: dict[str, torch.Tensor]) -> None:
    """timm ResNets share torchvision's key names; check that, rather than trusting it, on the meta device."""
    import torchvision

    if not name.startswith("resnet"):
        raise VitoError(f"torchvision/detectron2 export supports ResNets only, not {name!r}; use --format timm")
    try:
        with torch.device("meta"):
            reference = torchvision.models.get_model(name, weights=None).state_dict()
    except ValueError as error:
        raise VitoError(f"torchvision has no model named {name!r}; use --format timm") from error
    mismatched = [k for k in set(state) | set(reference) if k not in state or k not in reference
                  or state[k].shape != reference[k].shape]
    if mismatched:
        raise VitoError(f"{name}: timm and torchvision layouts differ at {sorted(mismatched)[:3]}; use --format timm")


def detectron2_name(torchvision_name: str) -> str:
    """A torchvision ResNet key in detectron2's naming (the rules of ``convert-torchvision-to-d2.py``)."""
    key = torchvision_name
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    key = key.replace("downsample.0", "shortcut")
    return key.replace("downsample.1", "shortcut.norm")
