"""Two gloo processes with half the batch each give the loss and gradients of one process with all of it.

The same first step is computed by one process with the global batch of 4 real COCO images and by two
processes with 2 images each (synchronised batch norm + DDP), for FCOS with vito's head (loss normaliser
averaged over processes), for FCOS* in both its stages (ATSS assignment, task-aligned assignment: normalisers
summed over processes), and once with torchvision's plain ``FCOSHead`` (normalised by the local foreground
count), which must *not* match: the two halves hold different numbers of foreground points.

Why float64: in float32 the two computations sum the batch-norm statistics and their gradients in different
orders, and the backbone's first stages (whose gradients are small differences of large terms, batch norm
removing each channel's mean and scale) then differ by up to a few per cent. In float64 the same comparison
agrees to ~1e-8, which shows the difference is rounding, not a missing term; any missing piece of the
reduction (a local normaliser, an unsynchronised batch norm) shows up as a per-cent error here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torchvision.models.detection.fcos import FCOSHead

from tests.helpers import free_port
from vito.engine import distributed
from vito.eval.core.encoders import load_encoder
from vito.eval.dense.detection.data import DetectionImages, collate_detection, load_annotations
from vito.eval.dense.detection.recipe import FinetunePlan, as_float, build_detector
from vito.eval.dense.detection.settings import DetectSettings

WORLD = 2
CANVAS = (96, 128)
# FCOS* on a canvas with a 2x2 P7: on a 1x1 P7 its GroupNorm (one channel per group at width 32) normalises a
# single value, whose rounding decides ReLU kinks of the alignment branch: a discontinuity, not a reduction error
STAR_CANVAS = (160, 192)
# name -> (head setting, FCOS*'s stage: task-aligned or ATSS, None for FCOS; canvas)
VARIANTS = {"global": ("fcos", None, CANVAS), "plain": ("fcos", None, CANVAS),
            "star_atss": ("fcos-star", False, STAR_CANVAS), "star_aligned": ("fcos-star", True, STAR_CANVAS)}


def _batch(shared: Path, canvas: tuple[int, int]) -> dict:
    coco = shared / "detection" / "coco"
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    images = DetectionImages(annotations, coco / "images", train=True, canvas=canvas, seed=3)
    return collate_detection([images.item(i, 0) for i in range(4)]), len(annotations.categories)


def _model(num_classes: int, variant: str) -> torch.nn.Module:
    head_setting, aligned, canvas = VARIANTS[variant]
    plan = FinetunePlan(DetectSettings(dataset="coco", val_ann=Path("unused"), resolution=canvas, batch_size=4,
                                       weight_decay=1e-4, flip=True, fpn_channels=32, head=head_setting), seed=0,
                        steps=1, warmup_steps=0, lr=1e-3)
    model = build_detector(load_encoder("torchvision:resnet18"), num_classes, plan)
    if variant == "plain":  # torchvision's own head, same weights
        head = FCOSHead(32, 1, num_classes)
        head.load_state_dict(model.head.state_dict())
        model.head = head
    if aligned is not None:
        model.head.task_aligned = aligned
    return model.double().train()


def _loss_and_grads(model: torch.nn.Module, batch: dict, part: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = [image.double() for image in as_float(batch["images"][part])]
    targets = [{k: v.double() if v.is_floating_point() else v for k, v in t.items()} for t in batch["targets"][part]]
    losses = model(images, targets)
    loss = sum(losses.values())
    loss.backward()
    inner = model.module if hasattr(model, "module") else model
    grads = {k: p.grad.detach().clone() for k, p in inner.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _worker(rank: int, port: int, shared: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = distributed.setup("cpu")
    part = slice(2 * rank, 2 * rank + 2)
    results = {}
    for name, (_, _, canvas) in VARIANTS.items():
        batch, num_classes = _batch(Path(shared), canvas)
        model = distributed.wrap_for_training(_model(num_classes, name), context)
        loss, grads = _loss_and_grads(model, batch, part)
        results[name] = (distributed.mean_over_processes(loss), grads)
        results[f"foreground {name}"] = sum(len(t["boxes"]) for t in batch["targets"][part])
    if rank == 0:
        torch.save(results, out)
    distributed.cleanup()


@pytest.mark.ddp
def test_two_processes_equal_one(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(free_port(), str(shared_data), str(out)), nprocs=WORLD, join=True)
    results = torch.load(out, weights_only=True)
    reference = {}
    for variant in ("global", "star_atss", "star_aligned"):
        batch, num_classes = _batch(shared_data, VARIANTS[variant][2])
        loss, grads = reference[variant] = _loss_and_grads(_model(num_classes, variant), batch, slice(0, 4))
        ddp_loss, ddp_grads = results[variant]
        assert torch.allclose(ddp_loss, loss, rtol=1e-8, atol=0), variant
        assert ddp_grads.keys() == grads.keys()
        # every tensor to 1e-4 of its scale (biases feeding GroupNorm have a true gradient of 0 and only rounding
        # noise, hence the floor at 1e-4 of the largest gradient); the whole gradient to 1e-6
        scale = max(float(g.abs().max()) for g in grads.values())
        errors = {k: float((ddp_grads[k] - g).abs().max() / max(float(g.abs().max()), 1e-4 * scale))
                  for k, g in grads.items()}
        assert max(errors.values()) < 1e-4, (variant, max(errors.items(), key=lambda item: item[1]))
        assert _relative(ddp_grads, grads) < 1e-6, variant
        assert results[f"foreground {variant}"] * 2 != sum(len(t["boxes"]) for t in batch["targets"])  # unequal halves

    loss, grads = reference["global"]
    plain_loss, plain_grads = results["plain"]  # torchvision's local normaliser: K processes != 1 process
    assert abs(float(plain_loss) - float(loss)) > 1e-4 * float(loss)
    assert _relative(plain_grads, grads) > 5e-2


def _relative(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """|g - g_ref| / |g_ref| over all parameters together."""
    difference = torch.cat([(grads[k] - g).flatten() for k, g in reference.items()])
    return float(difference.norm() / torch.cat([g.flatten() for g in reference.values()]).norm())
