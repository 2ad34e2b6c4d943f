"""FCOS*'s training targets and losses (TOOD's two stages, Wu et al.'s IoU branch); see ``fcos_star``.

Per image the points are assigned (``vito.eval.dense.detection.assign``): by ATSS while ``task_aligned`` is
False, by TOOD's task-aligned assignment after. Then, summed over the batch:

=============== ========================================== ===========================================
loss            ATSS stage                                 task-aligned stage
=============== ========================================== ===========================================
classification  focal loss on s (alpha 0.25, gamma 2)      quality focal loss (beta 2) towards t-hat
                / number of positives                      / sum of t-hat
bbox_regression 2 * GIoU loss * centre-ness target         2 * GIoU loss * t-hat / sum of t-hat
                / sum of centre-ness targets
iou             BCE(IoU logit, IoU of the predicted box with its target) / number of positives (both stages)
=============== ========================================== ===========================================

Every normaliser is summed over processes (``global_normaliser``), so the gradients do not depend on how a
batch is split.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from vito.eval.dense.detection import assign

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # TOOD's initial_loss_cls (focal loss on probabilities)
QFL_BETA = 2.0  # TOOD's loss_cls (quality focal loss)
GIOU_WEIGHT = 2.0  # TOOD's / ATSS's loss_bbox weight
IOU_WEIGHT = 1.0  # Wu et al.'s IoU prediction loss weight


def widened(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is in float64: bf16/fp16 outputs of autocast are widened for the targets and
    losses, a float64 model (the DDP test) keeps its precision."""
    return x if x.dtype == torch.float64 else x.float()


def global_normaliser(local: torch.Tensor) -> torch.Tensor:
    """What a process divides its loss sum by: ``max(1, sum over processes) / processes``.

    DDP averages the K processes' gradients, so the gradient is that of (sum of all losses) / max(1, total):
    one process holding the whole batch (mmdetection's ``reduce_mean(...).clamp(min=1)`` is the same whenever
    the total reaches K). A constant: the normaliser is not differentiated.
    """
    total = local.detach().clone()
    processes = 1
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
        processes = dist.get_world_size()
    return total.clamp(min=1) / processes


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (boxes [N, 4], x1 y1 x2 y2); 0 where the union is empty."""
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = width * height
    area = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    union = area + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(inter))


def centreness(centres: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS's centre-ness of points [N, 2] in their boxes [N, 4]: sqrt(min/max(left, right) * min/max(top, bottom))."""
    left, top = centres[:, 0] - boxes[:, 0], centres[:, 1] - boxes[:, 1]
    right, bottom = boxes[:, 2] - centres[:, 0], boxes[:, 3] - centres[:, 1]
    return torch.sqrt(torch.minimum(left, right) / torch.maximum(left, right)
                      * torch.minimum(top, bottom) / torch.maximum(top, bottom))


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, beta: float = QFL_BETA) -> torch.Tensor:
    """Summed quality focal loss (Li et al., GFL; TOOD's classification loss): BCE towards a soft target,
    scaled by ``|target - p| ** beta`` (for the background target 0 that is ``p ** beta``)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * (targets - torch.sigmoid(logits)).abs().pow(beta)).sum()


def iou_loss(iou_logits: torch.Tensor, predicted: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Summed BCE of the IoU branch towards the IoU of each predicted box with its target box (Wu et al.).

    As in Wu et al.'s code (their ``detach`` of the target is commented out), the target is not detached: the
    loss also reaches the boxes, through d BCE / d target = -logit, pushing a box whose IoU is predicted above
    1/2 towards a higher IoU.
    """
    return F.binary_cross_entropy_with_logits(iou_logits, paired_iou(predicted, boxes), reduction="sum")


def fcos_star_losses(task_aligned: bool, box_coder: BoxLinearCoder, targets: list[dict[str, torch.Tensor]],
                     head_outputs: dict[str, torch.Tensor], anchors: list[torch.Tensor],
                     num_anchors_per_level: list[int]) -> dict[str, torch.Tensor]:
    """The three losses of a batch (see the module docstring), each already divided by its normaliser."""
    logits = widened(head_outputs["cls_logits"])  # [B, A, C]
    iou_logits = widened(head_outputs["bbox_ctrness"]).squeeze(-1)  # [B, A]
    points = torch.stack(anchors).to(logits.dtype)  # [B, A, 4]: squares of side stride
    predicted = box_coder.decode(widened(head_outputs["bbox_regression"]), points)  # [B, A, 4] in pixels
    centres = (points[0, :, :2] + points[0, :, 2:]) / 2
    strides = points[0, :, 2] - points[0, :, 0]

    class_targets = torch.zeros_like(logits)
    positives = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
    matched_boxes = torch.zeros_like(predicted)
    box_weights = logits.new_zeros(logits.shape[:2])
    for image, target in enumerate(targets):
        boxes, labels = target["boxes"].to(logits.dtype), target["labels"]
        if task_aligned:
            found = assign.task_aligned(torch.sigmoid(logits[image]).detach(), predicted[image].detach(), centres,
                                        boxes, labels)
        else:
            found = assign.atss(centres, strides, num_anchors_per_level, boxes)
        points_of_image = torch.nonzero(found.matched >= 0).flatten()
        box = found.matched[points_of_image]
        positives[image, points_of_image] = True
        matched_boxes[image, points_of_image] = boxes[box]
        weight = (found.quality[points_of_image] if task_aligned
                  else centreness(centres[points_of_image], boxes[box]))
        box_weights[image, points_of_image] = weight
        class_targets[image, points_of_image, labels[box]] = weight if task_aligned else 1.0

    if task_aligned:
        classification = quality_focal_loss(logits, class_targets) / global_normaliser(class_targets.sum())
    else:
        classification = sigmoid_focal_loss(logits, class_targets, FOCAL_ALPHA, FOCAL_GAMMA, reduction="sum")
        classification = classification / global_normaliser(positives.sum().to(logits.dtype))
    weights = box_weights[positives]
    giou = generalized_box_iou_loss(predicted[positives], matched_boxes[positives], reduction="none")
    regression = GIOU_WEIGHT * (giou * weights).sum() / global_normaliser(weights.sum())
    quality = IOU_WEIGHT * iou_loss(iou_logits[positives], predicted[positives], matched_boxes[positives])
    quality = quality / global_normaliser(positives.sum().to(logits.dtype))
    return {"classification": classification, "bbox_regression": regression, "iou": quality}
