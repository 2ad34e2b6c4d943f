"""ImageNet pixel statistics and normalisation: the one place every view (training or evaluation) takes them from.

Pretrained timm/torchvision backbones and VITO's own augmentations all expect images scaled to [0, 1] and
normalised with these channel means and standard deviations; the evaluation crop keeps the central
224/256 of the short side (the standard ImageNet evaluation view, docs/metrics.md).
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 224 / 256  # the standard ImageNet evaluation crop: 224 of every 256 pixels of the short side


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of a batch [..., 3, H, W]: uint8 in [0, 255] or float in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images - mean) / std
