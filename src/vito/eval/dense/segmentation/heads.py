"""Dense-prediction heads for semantic-segmentation transfer, on any backbone that returns stage feature maps.

A backbone here is any ``nn.Module`` whose forward maps ``[B, 3, H, W]`` images to a list of NCHW feature
maps and that has ``.channels`` (one per map), e.g. ``vito.eval.dense.backbone.TrainableBackbone``.

- ``DilatedFCN`` (PASCAL VOC, BYOL appendix / DetCon / VITO lineage): the last map (res5 with dilation 2,
  stride 16) → two 3×3 convolutions of 256 channels with dilation 6, each with BN and ReLU → 1×1 classifier,
  logits bilinearly upsampled to the input. The "16s" of FCN-16s is this output stride; the head has no
  separate pool4 score branch (the protocol text names none). torchvision's ``FCNHead`` differs (one 3×3
  conv of in/4 channels, dropout).
- ``UPerNetSegmenter`` (ADE20K, mmsegmentation ``upernet_r50``): segmentation-models-pytorch's
  ``UPerNetDecoder`` over the last four maps (res2..res5) with ``decoder_channels=512`` as mmseg's
  ``UPerHead(channels=512)``; dropout 0.1 and a 1×1 classifier at stride 4; plus mmseg's auxiliary
  ``FCNHead`` on res4 (one 3×3 conv of 256 channels, BN, ReLU, dropout 0.1, 1×1 classifier), used only
  in training with loss weight 0.4. Known difference from mmseg: smp's decoder applies a LayerNorm to each
  encoder map before the pyramid (mmseg's ``UPerHead`` has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FCN_CHANNELS, FCN_DILATION = 256, 6
UPERNET_CHANNELS = 512  # mmseg upernet_r50: decode_head channels=512 (smp's default is 256)
AUX_CHANNELS, AUX_STAGE = 256, -2  # mmseg: auxiliary FCNHead(in_index=2 = res4, channels=256)
DROPOUT = 0.1  # mmseg BaseDecodeHead dropout_ratio


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """3×3 convolution (padding keeps the size), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DilatedFCN(nn.Module):
    """Backbone's last map → 2 × (3×3 conv 256, dilation 6, BN, ReLU) → 1×1 classifier → upsample."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            conv_bn_relu(backbone.channels[-1], FCN_CHANNELS, FCN_DILATION),
            conv_bn_relu(FCN_CHANNELS, FCN_CHANNELS, FCN_DILATION),
            nn.Conv2d(FCN_CHANNELS, num_classes, 1),
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.backbone(images)[-1])
        return {"logits": upsample(logits, images.shape[-2:])}


class AuxFCNHead(nn.Module):
    """mmseg's auxiliary ``FCNHead(num_convs=1, concat_input=False)``: 3×3 conv, BN, ReLU, dropout, 1×1."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(conv_bn_relu(in_channels, AUX_CHANNELS), nn.Dropout2d(DROPOUT),
                                    nn.Conv2d(AUX_CHANNELS, num_classes, 1))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.layers(feature)


class UPerNetSegmenter(nn.Module):
    """UPerNet (PPM + FPN fusion) over the backbone's four maps, with an auxiliary FCN head on the third.

    ``forward`` returns ``{"logits"}`` (upsampled to the input) and, in training, ``{"aux_logits"}``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        # smp loads timm and torchvision's model zoo: kept out of `vito eval --help`, which imports this module
        from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

        super().__init__()
        if len(backbone.channels) != 4:
            raise ValueError(f"UPerNet needs four feature maps (res2..res5), not {len(backbone.channels)}")
        self.backbone = backbone
        # smp's decoder takes [1, 1/2, 1/4, 1/8, 1/16, 1/32] maps and ignores the first two
        self.decoder = UPerNetDecoder([3, 3, *backbone.channels], encoder_depth=5, decoder_channels=UPERNET_CHANNELS)
        self.classifier = nn.Sequential(nn.Dropout2d(DROPOUT), nn.Conv2d(UPERNET_CHANNELS, num_classes, 1))
        self.aux = AuxFCNHead(backbone.channels[AUX_STAGE], num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.backbone(images)
        logits = self.classifier(self.decoder([images, images, *maps]))
        out = {"logits": upsample(logits, images.shape[-2:])}
        if self.training:
            out["aux_logits"] = upsample(self.aux(maps[AUX_STAGE]), images.shape[-2:])
        return out


def upsample(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of logits (align_corners=False, as mmseg's ``resize``)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
