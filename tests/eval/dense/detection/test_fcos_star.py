"""FCOS*'s pieces against hand-computed values: the IoU target, the scores, the losses, the points, the stages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from vito.eval.dense.detection.fcos_star import FCOSStar, FCOSStarHead, FixedStrideAnchors, aligned_logit
from vito.eval.dense.detection.fcos_star_loss import iou_loss, paired_iou, quality_focal_loss
from vito.eval.dense.detection.model import FCOS_STRIDES
from vito.eval.dense.detection.recipe import ALIGNMENT_START_EPOCHS, FinetunePlan, alignment_start, detection_loss
from vito.eval.dense.detection.settings import DetectSettings


def test_iou_target_of_a_known_prediction() -> None:
    """Prediction (0, 0, 2, 2) for the box (1, 1, 3, 3): intersection 1, union 4 + 4 - 1 = 7, target 1/7. With an
    IoU logit z = ln 3 (p = 3/4) the gradient of the BCE is p - target = 3/4 - 1/7 = 17/28 for the logit and
    -z * dIoU/dx2 for the prediction's right side (Wu et al. do not detach the target): moving x2 grows the
    intersection by 1 and the union by 2 - 1 = 1 per unit, dIoU/dx2 = (1 * 7 - 1 * 1) / 49 = 6/49."""
    predicted = torch.tensor([[0.0, 0, 2, 2]], dtype=torch.float64, requires_grad=True)
    box = torch.tensor([[1.0, 1, 3, 3]], dtype=torch.float64)
    assert paired_iou(predicted.detach(), box).tolist() == pytest.approx([1 / 7])
    logit = torch.tensor([math.log(3)], dtype=torch.float64, requires_grad=True)
    loss = iou_loss(logit, predicted, box)
    loss.backward()
    target = 1 / 7
    assert float(loss.detach()) == pytest.approx(-target * math.log(0.75) - (1 - target) * math.log(0.25))
    assert float(logit.grad) == pytest.approx(17 / 28)
    assert float(predicted.grad[0, 2]) == pytest.approx(-math.log(3) * 6 / 49)
    disjoint = paired_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 2, 3, 3]]))
    assert disjoint.tolist() == [0.0]


def test_aligned_score_and_detection_score() -> None:
    """s = sqrt(sigmoid(a) * sigmoid(b)): sigmoid 0.5 and 0.18 give 0.3; torchvision's post-processing then
    scores sqrt(s * IoU): with a predicted IoU of 0.64, sqrt(0.3 * 0.64) = 0.4382 (= s**0.5 * IoU**0.5)."""
    a, b = torch.tensor([0.0]), torch.tensor([math.log(0.18 / 0.82)])
    s = torch.sigmoid(aligned_logit(a, b))
    assert float(s) == pytest.approx(0.3, rel=1e-6)
    iou_logit = torch.tensor([math.log(0.64 / 0.36)])
    assert float(torch.sqrt(s * torch.sigmoid(iou_logit))) == pytest.approx(0.3 ** 0.5 * 0.8, rel=1e-6)
    # saturated logits stay finite (the score is kept below 1)
    assert torch.isfinite(aligned_logit(torch.tensor([200.0]), torch.tensor([200.0]))).all()


def test_post_processing_scores_with_the_predicted_iou() -> None:
    """One point of one class through torchvision's FCOS post-processing with FCOS*'s outputs: the score of its
    detection is s**0.5 * IoU**0.5 and its box the point's sides times the stride."""
    backbone = nn.Identity()
    backbone.out_channels = 32
    model = FCOSStar(backbone, 1, head=FCOSStarHead(32, 1, 1), anchor_generator=FixedStrideAnchors((8,)),
                     score_thresh=0.05)
    logits = aligned_logit(torch.tensor([[[0.0]]]), torch.tensor([[[math.log(0.18 / 0.82)]]]))  # s = 0.3
    outputs = {"cls_logits": [logits], "bbox_regression": [torch.tensor([[[1.0, 1.0, 2.0, 0.5]]])],
               "bbox_ctrness": [torch.tensor([[[math.log(0.64 / 0.36)]]])]}
    points = [[torch.tensor([[-4.0, -4.0, 4.0, 4.0]])]]  # the point (0, 0) of stride 8
    found = model.postprocess_detections(outputs, points, [(100, 100)])[0]
    assert found["scores"].tolist() == pytest.approx([0.3 ** 0.5 * 0.8], rel=1e-5)
    assert found["boxes"].tolist() == [[0.0, 0.0, 16.0, 4.0]]  # (-8, -8, 16, 4) clipped to the image


def test_quality_focal_loss() -> None:
    """p = 1/2 (logit 0): target 1/2 costs nothing (|t - p| = 0); target 0 costs ln 2 * (1/2)**2."""
    assert float(quality_focal_loss(torch.zeros(1), torch.tensor([0.5]))) == pytest.approx(0.0)
    assert float(quality_focal_loss(torch.zeros(1), torch.tensor([0.0]))) == pytest.approx(math.log(2) / 4)


def test_points_have_the_nominal_strides() -> None:
    """On an 800x1024 canvas P6 is 13x16 and P7 7x8: torchvision's generator would put them 61 and 114 pixels
    apart vertically (800 // 13, 800 // 7); FCOS*'s points are 64 and 128 apart, centred at j * stride."""
    sizes = [(100, 128), (50, 64), (25, 32), (13, 16), (7, 8)]
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    points = FixedStrideAnchors(FCOS_STRIDES)(ImageList(torch.zeros(1, 3, 800, 1024), [(800, 1024)]), features)[0]
    assert len(points) == sum(h * w for h, w in sizes)
    last = (points[-1, :2] + points[-1, 2:]) / 2
    assert last.tolist() == [7 * 128, 6 * 128]
    assert (points[-1, 2] - points[-1, 0]).item() == 128


def test_stage_follows_the_step() -> None:
    """The first ALIGNMENT_START_EPOCHS / epochs of the steps assign by ATSS, the rest by task alignment."""
    assert ALIGNMENT_START_EPOCHS == 4
    assert alignment_start(27724, 30) == 3697  # COCO at batch 128: 4 of 30 epochs
    assert alignment_start(6, 30) == 1 and alignment_start(6, 2) == 6

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = FCOSStarHead(32, 1, 1)
            self.seen: list[bool] = []

        def forward(self, images, targets):
            self.seen.append(self.head.task_aligned)
            return {"loss": torch.zeros(())}

    model = Model()
    for step in (0, 2, 3):
        detection_loss(model, {"step": step, "images": [], "targets": []}, alignment_start=3)
    assert model.seen == [False, False, True]


def test_the_head_is_part_of_the_run_identity() -> None:
    """A plain FCOS run keeps the identity it had before the head was a setting (no "head" key), so its stored
    fine-tunes are reused; FCOS* adds the head and its switch step."""
    def plan(head: str) -> FinetunePlan:
        settings = DetectSettings(dataset="coco", val_ann=Path("unused"), head=head)
        return FinetunePlan(settings, seed=0, steps=10, warmup_steps=1, lr=1e-3, alignment_start=2)

    before = {"dataset", "canvas", "batch_size", "steps", "warmup_steps", "lr", "weight_decay", "flip", "seed",
              "fpn_channels"}
    assert set(plan("fcos").key()) == before
    star = plan("fcos-star").key()
    assert set(star) == before | {"head", "alignment_start"} and star["head"] == "fcos-star"
    assert star["alignment_start"] == 2
    assert DetectSettings(dataset="coco", val_ann=Path("unused")).head == "fcos-star"  # the default
