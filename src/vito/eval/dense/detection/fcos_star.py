"""FCOS*: the paper's detector (A.3, "FCOS improved with Wu et al., Zhang et al. and Feng et al."), on torchvision.

What it takes from torchvision's FCOS: the model (transform, backbone + FPN call, anchors as points, the
``BoxLinearCoder`` and the post-processing: per-level top 1000, score threshold, class-wise NMS 0.6). What it
changes, with the published defaults of each source (docs/detection.md has the table):

* the head is TOOD's task-aligned head (Feng et al.): 6 shared "interaction" convolutions (GroupNorm), a
  classification and a regression feature decomposed from their stack by per-image layer attention, and
  the alignment of the two predictions (the class score is the geometric mean of the class probability and
  a learnt alignment probability; each side of the box is re-sampled at a learnt offset). Box sides are
  ``scale_level * exp(conv)`` cells from the point.
* an IoU branch on the regression feature predicts the IoU of the point's box with its target (Wu et al.),
  trained with binary cross-entropy towards the IoU (positives only); the detection score is
  ``s**0.5 * IoU**0.5`` (Wu et al.'s ``alpha`` = 0.5): torchvision scores a point by
  ``sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness))``, so the head hands it the logit of ``s`` and the IoU
  logit under those two names.
* assignment: ATSS (Zhang et al., top 9 per level, mean + std IoU threshold, centre inside) for the first
  training steps, then TOOD's task-aligned assignment (``vito.eval.dense.detection.assign``); the model's
  ``task_aligned`` flag says which, set by the recipe from the step.
* losses (TOOD): while ATSS assigns, focal loss on ``s`` (alpha 0.25, gamma 2) and the GIoU loss (weight 2)
  weighted by the centre-ness target; after, quality focal loss (beta 2) towards the normalised alignment
  metric and the GIoU loss weighted by it. Each loss is divided by its normaliser summed over all processes,
  so K processes train exactly like one holding their whole batch (``fcos_star_loss.global_normaliser``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import deform_conv2d

from vito.eval.dense.detection.fcos_star_loss import fcos_star_losses, widened

STACKED_CONVS = 6  # TOOD's interaction convolutions (configs/tood: stacked_convs=6)
GROUPS = 32  # GroupNorm groups (mmdetection's head norm_cfg)
PRIOR = 0.01  # initial foreground probability of the classification biases
MAX_LOG_SCORE = -1e-7  # keeps the score below 1 so that its logit is finite


class TaskDecomposition(nn.Module):
    """One task's feature from the stacked interaction features: layer attention, then a 1x1 conv + GN + ReLU.

    The attention (from the image's average-pooled stack) weights each of the stacked layers; it is folded
    into the 1x1 kernel per image (as TOOD does), which is the same as weighting the features but never
    materialises the weighted copy of the stack.
    """

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        hidden = channels // 8  # (channels * layers) / TOOD's la_down_rate (8 * layers)
        self.channels, self.layers = channels, layers
        self.attention = nn.Sequential(nn.Conv2d(channels * layers, hidden, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(hidden, layers, 1), nn.Sigmoid())
        self.reduction = nn.Conv2d(channels * layers, channels, 1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, channels)
        for conv in self.attention:
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.001)
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.reduction.weight, std=0.01)

    def forward(self, stacked: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = stacked.shape
        c, n = self.channels, self.layers
        weight = self.attention(pooled).reshape(batch, 1, n, 1)
        kernel = (weight * self.reduction.weight.reshape(1, c, n, c)).reshape(batch, c, n * c)
        out = torch.bmm(kernel, stacked.reshape(batch, n * c, height * width)).reshape(batch, c, height, width)
        return F.relu(self.norm(out))


def _conv_block(channels: int) -> nn.Sequential:
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    nn.init.normal_(conv.weight, std=0.01)
    return nn.Sequential(conv, nn.GroupNorm(GROUPS, channels), nn.ReLU(inplace=True))


def _alignment_branch(channels: int, layers: int, outputs: int, std: float) -> nn.Sequential:
    branch = nn.Sequential(nn.Conv2d(channels * layers, channels // 4, 1), nn.ReLU(inplace=True),
                           nn.Conv2d(channels // 4, outputs, 3, padding=1))
    for conv in (branch[0], branch[2]):
        nn.init.normal_(conv.weight, std=std)
        nn.init.zeros_(conv.bias)
    return branch


def aligned_logit(class_logit: torch.Tensor, alignment_logit: torch.Tensor) -> torch.Tensor:
    """The logit of TOOD's aligned score ``s = sqrt(sigmoid(class) * sigmoid(alignment))``, in log space."""
    log_score = 0.5 * (F.logsigmoid(widened(class_logit)) + F.logsigmoid(widened(alignment_logit)))
    log_score = log_score.clamp(max=MAX_LOG_SCORE)
    return log_score - torch.log(-torch.expm1(log_score))


class FCOSStarHead(nn.Module):
    """TOOD's task-aligned head with Wu et al.'s IoU branch, in torchvision's head interface.

    ``forward(features)`` returns, like torchvision's ``FCOSHead``, ``cls_logits`` [B, A, C] (the logit of the
    aligned score), ``bbox_regression`` [B, A, 4] (left, top, right, bottom in strides from the point) and
    ``bbox_ctrness`` [B, A, 1] (here: the IoU logit), the points of all levels concatenated.
    """

    def __init__(self, channels: int, num_classes: int, num_levels: int, stacked_convs: int = STACKED_CONVS) -> None:
        super().__init__()
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.interaction = nn.ModuleList(_conv_block(channels) for _ in range(stacked_convs))
        self.cls_decomposition = TaskDecomposition(channels, stacked_convs)
        self.reg_decomposition = TaskDecomposition(channels, stacked_convs)
        self.cls_conv = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.reg_conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.iou_conv = nn.Conv2d(channels, 1, 3, padding=1)
        self.cls_alignment = _alignment_branch(channels, stacked_convs, 1, std=0.01)
        self.reg_alignment = _alignment_branch(channels, stacked_convs, 8, std=0.001)  # (dy, dx) per box side
        self.scales = nn.Parameter(torch.ones(num_levels))
        prior_bias = -math.log((1 - PRIOR) / PRIOR)
        for conv in (self.cls_conv, self.reg_conv, self.iou_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_conv.bias, prior_bias)
        nn.init.constant_(self.cls_alignment[2].bias, prior_bias)
        self.task_aligned = True  # False: ATSS assignment and TOOD's initial losses (the first steps)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = [self._level(x, self.scales[level]) for level, x in enumerate(features)]
        return {name: torch.cat([o[name] for o in outputs], dim=1) for name in outputs[0]}

    def _level(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        stacked = []
        for block in self.interaction:
            x = block(x)
            stacked.append(x)
        stack = torch.cat(stacked, dim=1)
        pooled = F.adaptive_avg_pool2d(stack, 1)
        cls_feature = self.cls_decomposition(stack, pooled)
        reg_feature = self.reg_decomposition(stack, pooled)
        logits = aligned_logit(self.cls_conv(cls_feature), self.cls_alignment(stack))
        sides = scale * widened(self.reg_conv(reg_feature)).exp()
        box = _aligned_box(sides, widened(self.reg_alignment(stack)))
        iou_logit = widened(self.iou_conv(reg_feature))
        return {"cls_logits": _flat(logits), "bbox_regression": _flat(box), "bbox_ctrness": _flat(iou_logit)}

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], num_anchors_per_level: list[int]) -> dict[str, torch.Tensor]:
        """The three losses of a batch, each divided by its normaliser summed over all processes."""
        return fcos_star_losses(self.task_aligned, self.box_coder, targets, head_outputs, anchors,
                                num_anchors_per_level)


def _aligned_box(sides: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """TOOD's regression alignment: the box of each point (in cells), each of its four coordinates read
    (bilinearly) at a learnt offset from the point, returned as sides from the point again."""
    height, width = sides.shape[-2:]
    y = torch.arange(height, dtype=sides.dtype, device=sides.device).view(height, 1).expand(height, width)
    x = torch.arange(width, dtype=sides.dtype, device=sides.device).view(1, width).expand(height, width)
    box = torch.stack([x - sides[:, 0], y - sides[:, 1], x + sides[:, 2], y + sides[:, 3]], dim=1)
    box = deform_conv2d(box, offsets, box.new_ones(4, 1, 1, 1))  # one offset group per coordinate
    return torch.stack([x - box[:, 0], y - box[:, 1], box[:, 2] - x, box[:, 3] - y], dim=1)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] -> [B, H*W, K], the point order of torchvision's anchors."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class FixedStrideAnchors(AnchorGenerator):
    """torchvision's anchor points (one square of side ``stride`` per location, centred at ``j * stride``) with the
    nominal strides of the levels.

    torchvision derives a level's stride as ``image side // feature side``, which for P6 and P7 of an 800-pixel
    canvas gives 61 and 114 instead of 64 and 128 and moves their points away from their features.
    """

    def __init__(self, strides: Sequence[int]) -> None:
        super().__init__(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        self.strides = tuple(strides)

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        grid_sizes = [f.shape[-2:] for f in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        points = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [points for _ in range(len(image_list.image_sizes))]


class FCOSStar(FCOS):
    """torchvision's FCOS with the assignment moved into the head (ATSS / task-aligned instead of FCOS's ranges)."""

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], num_anchors_per_level: list[int]) -> dict[str, torch.Tensor]:
        return self.head.compute_loss(targets, head_outputs, anchors, num_anchors_per_level)
