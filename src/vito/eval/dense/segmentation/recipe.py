"""Fine-tuning an encoder for semantic segmentation: the two protocols, the model, the loss and inference.

Protocols (docs/segmentation.md; the paper states none for segmentation, appendix A.2 is missing from our copy):

- ``voc`` [DEFAULT: BYOL appendix D, the protocol DetCon and VITO descend from]: ``DilatedFCN`` on the encoder
  with res5 dilated (stride 16); ``trainaug`` (VOC 2012 train + SBD, 10 582 images) → ``val``; random scale
  0.5–2.0, 513 crops, flip; batch 16; SGD momentum 0.9, weight decay 1e-4; lr ×0.1 at 70 % and 90 % of 30k
  iterations; lr swept over 5 log-spaced values in [1e-3, 1e-1], the best (mean over seeds) reported on val
  with the whole sweep recorded; 513×513 centre-crop inference; 5 seeds, mean ± sd.
- ``ade20k`` [DEFAULT: mmsegmentation ``configs/upernet/upernet_r50_4xb4-160k_ade20k-512x512.py``]: UPerNet
  (``UPerNetSegmenter``) with an auxiliary FCN head (weight 0.4); 512 crops from ``RandomResize((2048, 512),
  ratio 0.5–2.0)``, ``cat_max_ratio`` 0.75, flip, photometric distortion; batch 16 (4 GPUs × 4); SGD lr 0.01,
  momentum 0.9, weight decay 5e-4, poly decay (power 0.9) to 1e-4 over 160k iterations; ``reduce_zero_label``;
  test: resize to fit (2048, 512) keeping the ratio, whole-image inference, logits resized back.

The loss is pixel cross-entropy with 255 ignored (``Protocol.loss_average``, ``--loss-average``):

- ``all_pixels`` (ADE20K's default, as mmseg's ``CrossEntropyLoss`` with its default ``avg_non_ignore=False``):
  the sum over labelled pixels divided by the number of *all* pixels of the batch, ignored and padded ones
  included, so an image with many ignored pixels weighs less;
- ``labelled_pixels`` (VOC's default; PyTorch's own mean, mmseg's ``avg_non_ignore=True``): divided by the
  number of labelled pixels.

Either count is taken over the *global* batch (summed over processes), so K processes compute the gradient one
process would at the same global batch (mmseg averages per GPU; with one process they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vito.data.images import UnreadableImage, read_rgb
from vito.engine import distributed
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.dense.backbone import TrainableBackbone
from vito.eval.dense.segmentation.augment import TrainAugment, logits_to_original, network_input, raise_batch_error
from vito.eval.dense.segmentation.data import IGNORE_INDEX, SegmentationDataset
from vito.eval.dense.segmentation.heads import DilatedFCN, UPerNetSegmenter
from vito.eval.dense.segmentation.metrics import SegmentationAreas
from vito.eval.dense.segmentation.pictures import save_index_png, save_mask_panel

CHECKPOINT_FORMAT = "vito-segment/1"
MOMENTUM = 0.9
LossAverage = Literal["all_pixels", "labelled_pixels"]


@dataclass(frozen=True)
class Protocol:
    """Everything a preset fixes; CLI settings may override iterations, lrs, seeds, batch and crop size."""

    head: Literal["fcn", "upernet"]
    train_split: str
    iterations: int
    batch_size: int
    crop: int
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    weight_decay: float
    schedule: Literal["step", "poly"]
    augment: TrainAugment
    test_mode: Literal["centre-pad", "resize-fit"]
    test_size: int | tuple[int, int]
    aux_weight: float = 0.0
    min_lr: float = 0.0  # poly: the floor
    loss_average: LossAverage = "labelled_pixels"
    source: str = ""


PROTOCOLS: dict[str, Protocol] = {
    "voc": Protocol(
        head="fcn", train_split="trainaug", iterations=30_000, batch_size=16, crop=513,
        lrs=tuple(float(v) for v in np.logspace(-3, -1, 5)), seeds=(0, 1, 2, 3, 4), weight_decay=1e-4,
        schedule="step", augment=TrainAugment(crop=513), test_mode="centre-pad", test_size=513,
        source="BYOL appendix D (FCN-16s-style head, dilated res5), docs/segmentation.md",
    ),
    "ade20k": Protocol(
        head="upernet", train_split="train", iterations=160_000, batch_size=16, crop=512, lrs=(0.01,), seeds=(0,),
        weight_decay=5e-4, schedule="poly", min_lr=1e-4, aux_weight=0.4, loss_average="all_pixels",
        augment=TrainAugment(crop=512, fit_scale=(2048, 512), cat_max_ratio=0.75, photometric=True),
        test_mode="resize-fit", test_size=(2048, 512),
        source="mmsegmentation upernet_r50_4xb4-160k_ade20k-512x512 (UperNet, Xiao et al. 2018), docs/segmentation.md",
    ),
}
STEP_MILESTONES = (0.7, 0.9)
POLY_POWER = 0.9


def build_model(encoder: Encoder, protocol: Protocol, num_classes: int) -> nn.Module:
    """A trainable copy of the encoder with the protocol's head (the head initialised from torch's RNG)."""
    if protocol.head == "fcn":
        return DilatedFCN(TrainableBackbone(encoder, [-1], dilation=2), num_classes)
    stages = list(range(encoder.num_stages - 4, encoder.num_stages))
    return UPerNetSegmenter(TrainableBackbone(encoder, stages), num_classes)


def learning_rate(step: int, base_lr: float, protocol: Protocol, iterations: int) -> float:
    """Step decay ×0.1 at 70 % and 90 % of the iterations (VOC), or poly 0.9 down to ``min_lr`` (ADE20K)."""
    if protocol.schedule == "step":
        return base_lr * 0.1 ** sum(step >= int(m * iterations) for m in STEP_MILESTONES)
    return (base_lr - protocol.min_lr) * (1 - step / iterations) ** POLY_POWER + protocol.min_lr


def make_optimizer(model: nn.Module, lr: float, protocol: Protocol) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=MOMENTUM,
                           weight_decay=protocol.weight_decay)


def global_mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                              average: LossAverage = "labelled_pixels") -> torch.Tensor:
    """Cross-entropy summed over labelled pixels / (pixels counted over all processes / processes).

    ``average`` says which pixels count: ``labelled_pixels`` (those not 255) or ``all_pixels`` (every pixel of the
    batch, mmseg's default). DDP averages gradients over K processes, so dividing by the global count / K here
    makes the averaged gradient the gradient of the global mean, as one process would compute it.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    counted = labels != IGNORE_INDEX if average == "labelled_pixels" else torch.ones_like(labels, dtype=torch.bool)
    count = distributed.mean_over_processes(counted.sum().double().reshape(1))  # global count / K
    return total / count.clamp(min=1.0 / distributed.world_size()).float()


def segmentation_loss(model: nn.Module, batch: dict[str, Any], aux_weight: float = 0.0,
                      average: LossAverage = "labelled_pixels") -> dict[str, torch.Tensor]:
    raise_batch_error(batch)  # bad data found by a loader worker stops the run here, as a one-line DataError
    out = model(batch["images"])
    decode = global_mean_cross_entropy(out["logits"], batch["labels"], average)
    if aux_weight and "aux_logits" in out:
        aux = global_mean_cross_entropy(out["aux_logits"], batch["labels"], average)
        return {"loss": decode + aux_weight * aux, "decode": decode.detach(), "aux": aux.detach()}
    return {"loss": decode}


@dataclass
class Predictions:
    """What inference over a split left: summed areas, skipped items, the picture files written."""

    areas: SegmentationAreas
    skipped: list[tuple[str, str]]
    pictures: list[Path]


def predict_split(model: nn.Module, dataset: SegmentationDataset, protocol: Protocol, out_dir: Path,
                  device: torch.device, precision: str, pictures: int = 4) -> Predictions:
    """Predict every image of this process's share of ``dataset`` at its original size; write PNGs and areas.

    ``out_dir/predictions/<id>.png`` (class indices, VOC palette: ``vito eval segment --predictions`` scores
    them again) and, on the main process, ``out_dir/pictures/<id>.png`` for the first ``pictures`` images.
    Areas and skipped items are combined over processes.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model.eval()
    areas = SegmentationAreas(dataset.num_classes)
    skipped: list[tuple[str, str]] = []
    drawn: list[Path] = []
    for item in dataset.items[rank::world]:
        try:
            image, label = read_rgb(item.image), dataset.read_mask(item)
        except UnreadableImage as error:
            skipped.append((item.id, str(error)))
            continue
        if image.shape[:2] != label.shape:
            skipped.append((item.id, f"image {image.shape[1]}x{image.shape[0]} and mask differ in size"))
            continue
        pred = predict_image(model, image, protocol, device, precision)
        areas.update(pred, label)
        save_index_png(pred, out_dir / "predictions" / f"{item.id}.png")
        if rank == 0 and len(drawn) < pictures:
            drawn.append(out_dir / "pictures" / f"{item.id}.png")
            save_mask_panel(image, label, pred, drawn[-1])
    return Predictions(_sum_areas(areas), distributed.gather_objects(skipped), drawn)


def predict_image(model: nn.Module, image: np.ndarray, protocol: Protocol, device: torch.device,
                  precision: str) -> np.ndarray:
    """int64 ``[H, W]`` class map of one uint8 RGB image, at its original size.

    The network input is zero-padded at the bottom and right to a multiple of the backbone's
    ``input_multiple`` (a transformer's patch size; mmseg pads to a size divisor the same way) and the
    padding's logits are cut off again; convolutional backbones take the input as it is.
    """
    inputs, geometry = network_input(image, protocol.test_mode, protocol.test_size)
    height, width = inputs.shape[-2:]
    multiple = getattr(model.backbone, "input_multiple", 1)
    inputs = F.pad(inputs, (0, -width % multiple, 0, -height % multiple))
    with inference_mode(device, precision):
        logits = model(inputs.to(device))["logits"][..., :height, :width]
    return logits_to_original(logits.float(), protocol.test_mode, geometry).argmax(0).cpu().numpy()


def _sum_areas(areas: SegmentationAreas) -> SegmentationAreas:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return areas
    counts = np.concatenate([areas.as_array().reshape(-1), [areas.images, areas.out_of_range_pixels]])
    total = distributed.mean_over_processes(torch.from_numpy(counts).double()) * dist.get_world_size()
    total = total.round().long().numpy()
    c = areas.num_classes
    summed = SegmentationAreas(c, *(total[i * c:(i + 1) * c] for i in range(4)), images=int(total[-2]),
                               out_of_range_pixels=int(total[-1]))
    return summed
