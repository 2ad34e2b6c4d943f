"""The detectors on any backbone that returns C3, C4, C5 feature maps (paper A.3, docs/detection.md).

``build_fcos_star`` (the paper's FCOS*, ``vito.eval.dense.detection.fcos_star``: the default) and ``build_fcos``
(plain torchvision FCOS). Plain FCOS is torchvision's ``FCOS`` as it is, with three pieces around it
(FCOS* shares the first and the last):

* ``FeaturePyramid``: the backbone's last three stages (strides 8, 16, 32) into torchvision's
  ``FeaturePyramidNetwork`` with P6/P7 from P5 (``LastLevelP6P7(256, 256)``), exactly the FPN of
  torchvision's ``fcos_resnet50_fpn``; P3..P7 carry 256 channels.
* ``GlobalFCOSHead``: torchvision's ``FCOSHead`` divides its three losses by the number of foreground
  points *of this process* (``num_foreground = ... .item()``). Under DDP the gradients of K processes are
  averaged, so K processes would weight each image by 1/(K * local count) instead of 1/(global count).
  The head rescales its losses so that they are divided by the mean count over processes (detectron2's
  ``num_pos_avg``): K processes then give the gradients of one process holding the whole batch.
* ``CanvasTransform``: images arrive already resized by the data pipeline (the A.3 preset: fit into
  800x1024 at test, scale jitter and crop/pad at train), so torchvision's own min/max-size resizing is
  switched off; images are normalised and padded to the fixed canvas.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from vito.eval.dense.detection.fcos_star import FCOSStar, FCOSStarHead, FixedStrideAnchors
from vito.eval.dense.detection.settings import FPN_CHANNELS

FCOS_STRIDES = (8, 16, 32, 64, 128)  # P3..P7; one anchor point per location, its size = the stride
SIZE_DIVISIBLE = 32  # the canvas is rounded up to this (the largest backbone stride)


class FeaturePyramid(nn.Module):
    """``backbone(images) -> [C3, C4, C5]`` (a list of NCHW maps, ``backbone.channels`` long) -> P3..P7."""

    def __init__(self, backbone: nn.Module, channels: Sequence[int], out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"FCOS needs three backbone stages (C3, C4, C5), got {len(channels)}")
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(list(channels), out_channels, extra_blocks=LastLevelP6P7(out_channels,
                                                                                                 out_channels))
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(images)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


class GlobalFCOSHead(FCOSHead):
    """torchvision's FCOS head with its loss normaliser averaged over processes (see the module docstring)."""

    def compute_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        head_outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        local = torch.stack([(m >= 0).sum() for m in matched_idxs]).sum().float()  # torchvision's num_foreground
        mean = local.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        scale = local.clamp(min=1) / mean.clamp(min=1)  # undo max(1, local), divide by max(1, mean)
        return {name: loss * scale for name, loss in losses.items()}


class CanvasTransform(GeneralizedRCNNTransform):
    """Normalise and pad to a fixed ``canvas`` (height, width); no resizing (the data pipeline did it)."""

    def __init__(self, canvas: tuple[int, int], image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        super().__init__(min(canvas), max(canvas), list(image_mean), list(image_std), size_divisible=SIZE_DIVISIBLE)
        self.canvas = (_round_up(canvas[0]), _round_up(canvas[1]))

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = SIZE_DIVISIBLE) -> torch.Tensor:
        height = _round_up(max(self.canvas[0], *(i.shape[-2] for i in images)))
        width = _round_up(max(self.canvas[1], *(i.shape[-1] for i in images)))
        batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        for padded, image in zip(batch, images):
            padded[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch


def _round_up(side: int) -> int:
    return -(-side // SIZE_DIVISIBLE) * SIZE_DIVISIBLE


def build_fcos(
    backbone: nn.Module,
    channels: Sequence[int],
    num_classes: int,
    canvas: tuple[int, int],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
    fpn_channels: int = FPN_CHANNELS,
) -> FCOS:
    """torchvision ``FCOS`` on ``FeaturePyramid(backbone)`` with the global-normaliser head and the canvas transform.

    ``score_thresh`` 0.05 and 100 detections per image are the usual COCO test settings (torchvision's
    defaults, 0.2, are for visualisation); LVIS asks for 300. ``fpn_channels`` (256 in FCOS) is the width of
    the FPN and of the head's towers (GroupNorm with 32 groups: a multiple of 32).
    """
    pyramid = FeaturePyramid(backbone, channels, fpn_channels)
    head = GlobalFCOSHead(pyramid.out_channels, num_anchors=1, num_classes=num_classes)
    model = FCOS(pyramid, num_classes, head=head, score_thresh=score_thresh, detections_per_img=detections_per_img,
                 image_mean=list(image_mean), image_std=list(image_std))
    model.transform = CanvasTransform(canvas, image_mean, image_std)
    return allow_one_value_per_group(model)


def build_fcos_star(
    backbone: nn.Module,
    channels: Sequence[int],
    num_classes: int,
    canvas: tuple[int, int],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
    fpn_channels: int = FPN_CHANNELS,
) -> FCOSStar:
    """FCOS* on ``FeaturePyramid(backbone)``: the task-aligned head with the IoU branch, points at the nominal
    strides, the canvas transform; the test settings and the FPN as in ``build_fcos``."""
    pyramid = FeaturePyramid(backbone, channels, fpn_channels)
    head = FCOSStarHead(pyramid.out_channels, num_classes, num_levels=len(FCOS_STRIDES))
    model = FCOSStar(pyramid, num_classes, head=head, anchor_generator=FixedStrideAnchors(FCOS_STRIDES),
                     score_thresh=score_thresh, detections_per_img=detections_per_img, image_mean=list(image_mean),
                     image_std=list(image_std))
    model.transform = CanvasTransform(canvas, image_mean, image_std)
    return allow_one_value_per_group(model)


class OneValueGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also normalises a group holding one value (its output is then the bias, as the
    formula gives). Why: PyTorch refuses such input with batch norm's check ("Expected more than 1 value per
    channel when training"), even in eval mode, and one image at <= 128 px has a 1x1 P7 map, so with 32 FPN
    channels (one per group) the prediction of a lone image (the last of an eval set, say) failed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def allow_one_value_per_group(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.GroupNorm`` a ``OneValueGroupNorm`` (torchvision's heads build theirs inside;
    the parameters and the state dict are unchanged)."""
    for module in model.modules():
        if type(module) is nn.GroupNorm:
            module.__class__ = OneValueGroupNorm
    return model
