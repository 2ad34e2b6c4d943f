"""The trainable backbone both dense transfers fine-tune: a copy of an encoder's network, optionally with a
dilated last stage."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from vito.errors import VitoError
from vito.eval.core.encoders import Encoder, stride_of


class TrainableBackbone(nn.Module):
    """A trainable copy of an ``Encoder``'s network that returns the feature maps of ``stages``.

    Why a copy: every fine-tune of a learning-rate sweep or a seed starts from the same pretrained weights,
    and the frozen ``Encoder`` stays as it was. The copy has no classifier head and no VITO pooling (they take
    no part in dense prediction, and unused trainable parameters would break DDP). ``dilation`` > 1 makes
    the last stage keep its input resolution with dilated convolutions instead (DeepLab / torchvision's
    ``replace_stride_with_dilation``): its strided layers get stride 1, every other k×k convolution of
    the stage dilation ``dilation``, so a ResNet's res5 runs at stride 16 ("conv5 dilation 2").
    """

    def __init__(self, encoder: Encoder, stages: Sequence[int], dilation: int = 1) -> None:
        super().__init__()
        model = copy.deepcopy(encoder.model)
        if encoder.library == "timm":
            model.reset_classifier(0)
        elif hasattr(model, "fc"):
            model.fc = nn.Identity()
        self.encoder = Encoder(model, encoder.library, encoder.arch, encoder.name, fingerprint=encoder.fingerprint)
        self.stages = self.encoder.resolve_stages(stages)
        if dilation > 1:
            _dilate_stage(self.encoder, self.encoder.num_stages - 1, dilation)
        self.dilation = dilation
        self.channels = [self.encoder.stage_channels()[i] for i in self.stages]
        self.input_multiple = input_multiple(model)
        self.encoder.requires_grad_(True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder.feature_maps(images, self.stages)


def input_multiple(model: nn.Module) -> int:
    """What an input's height and width must be multiples of: the patch size of a patch-embedding transformer
    (Swin, ViT: timm asserts it), 1 for a convolutional network (any size runs)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", 1)
    return int(max(patch)) if isinstance(patch, (tuple, list)) else int(patch)


def _dilate_stage(encoder: Encoder, stage: int, dilation: int) -> None:
    strided = 0
    for module in encoder.stage_module(stage).modules():
        if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)) and stride_of(module) != (1, 1):
            module.stride, strided = 1, strided + 1
        elif isinstance(module, nn.Conv2d) and stride_of(module) != (1, 1):
            module.stride, strided = (1, 1), strided + 1  # the first block's strided conv keeps dilation 1
        elif isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
            module.dilation = (dilation, dilation)
            module.padding = tuple(dilation * (k - 1) // 2 for k in module.kernel_size)
    if strided == 0:
        raise VitoError(f"the last stage of {encoder.name} has no strided layer to replace by dilation")
    encoder._extractors.clear()
