"""One detector fine-tune of an encoder on COCO or LVIS (one seed): train, predict the val set, score.

The protocol (paper A.3, docs/detection.md): FCOS* (or, with ``--head fcos``, plain torchvision FCOS) on an FPN
over the encoder's C3..C5, the A.3 views
(``vito.eval.dense.detection.transforms``), AdamW with weight decay 1e-4 on every parameter, a base learning rate
of 1e-3 at a global batch of 128 scaled linearly with the batch, a linear warm-up over 1/4 epoch and x0.1
after 2/3 and after 8/9 of the steps, 30 epochs. An "epoch" is ``len(train images) / batch`` steps; step
``s`` takes images ``s*B .. (s+1)*B - 1`` of an endless stream of per-epoch permutations, so every step's
batch (and, with the view seeds, every pixel of it) is a pure function of ``(seed, s)``: resuming at step
``s`` continues the same run, on any number of processes.

Training runs in the shared fine-tune loop (``vito.engine.finetune``: run folder and lock, stop signals,
checkpoints of format ``vito-detect/1``, resume, reuse of a finished run with the same settings, DDP, bf16
autocast on CUDA, progress bar, ``metrics.jsonl``, TensorBoard). K processes (``torchrun --nproc-per-node K
-m vito eval detect ...``) split each global batch; batch norm is synchronised and the loss normalisers summed
over processes (``vito.eval.dense.detection.model``, ``fcos_star_loss``), so K processes train like one. FCOS*
assigns with ATSS until ``FinetunePlan.alignment_start`` and with TOOD's task alignment after: a function of
the step, so a resumed run switches at the same step.

A seed's run folder also gets ``detections.json`` (the val predictions in the COCO results format) and
``pictures/`` (predictions next to the ground truth for a few val images).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from vito.data.images import UnreadableImage, read_image
from vito.data.stream import EpochShuffle, StepStream
from vito.engine import distributed
from vito.engine.checkpoint import seed_all
from vito.engine.finetune import FinetuneSpec, finetune, make_loader
from vito.engine.progress import progress
from vito.errors import VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.dense.backbone import TrainableBackbone
from vito.eval.dense.detection.data import Annotations, DetectionImages, collate_detection, image_file, targets_of
from vito.eval.dense.detection.fcos_star import FCOSStarHead
from vito.eval.dense.detection.metrics import LVIS_MAX_DETS, DetectionScores, score_detections
from vito.eval.dense.detection.model import build_fcos, build_fcos_star
from vito.eval.dense.detection.pictures import save_detection_picture
from vito.eval.dense.detection.settings import REFERENCE_BATCH, DetectSettings
from vito.eval.dense.detection.transforms import boxes_to_original
from vito.io import atomic_write

CHECKPOINT_FORMAT = "vito-detect/1"
DETECTIONS_FILE = "detections.json"
LR_DROPS = (2 / 3, 8 / 9)
BACKBONE_STAGES = (-3, -2, -1)  # C3, C4, C5 (strides 8, 16, 32)
# test-time detector settings: COCO's usual 0.05 / 100; LVIS keeps more, lower-scored boxes (detectron2's
# LVIS configs: 1e-4 / 300) because its AP is computed over 300 detections per image
TEST_SETTINGS = {"coco": (0.05, 100), "lvis": (1e-4, LVIS_MAX_DETS)}
# FCOS*: TOOD assigns with ATSS for its first 4 epochs (initial_epoch=4 in its 12- and 24-epoch configs), then
# by task alignment; vito keeps the 4 epochs as the same fraction of its schedule (4 of A.3's 30 epochs)
ALIGNMENT_START_EPOCHS = 4.0


@dataclass
class FinetunePlan:
    """One seed's fine-tune: the evaluation's settings, and what follows from them for this train set."""

    settings: DetectSettings
    seed: int
    steps: int
    warmup_steps: int
    lr: float  # after linear scaling with the batch
    identity: dict[str, Any] = field(default_factory=dict)  # encoder + annotation files, for refusing changes
    alignment_start: int = 0  # FCOS*: the first step assigned by task alignment (ATSS before)

    @property
    def canvas(self) -> tuple[int, int]:
        return (self.settings.resolution[0], self.settings.resolution[1])

    def key(self) -> dict[str, Any]:
        """The settings a resumed or reused run must share (logging and loader sizes may change)."""
        s = self.settings
        # plain FCOS runs made before the head was a setting have no "head": absent means fcos, so they are reused
        head = {} if s.head == "fcos" else {"head": s.head, "alignment_start": self.alignment_start}
        return {"dataset": s.dataset, "canvas": list(self.canvas), "batch_size": s.batch_size, "steps": self.steps,
                "warmup_steps": self.warmup_steps, "lr": self.lr, "weight_decay": s.weight_decay, "flip": s.flip,
                "seed": self.seed, "fpn_channels": s.fpn_channels, **head, **self.identity}


def plan_steps(num_images: int, batch_size: int, epochs: float, warmup_epochs: float,
               max_steps: int | None) -> tuple[int, int]:
    """(total steps, warm-up steps): epochs of ``num_images / batch_size`` steps; ``max_steps`` caps both."""
    per_epoch = num_images / batch_size
    steps = max(1, round(epochs * per_epoch))
    warmup = round(warmup_epochs * per_epoch)
    if max_steps is not None:
        steps, warmup = min(steps, max_steps), min(warmup, max_steps)
    return steps, min(warmup, steps)


def alignment_start(steps: int, epochs: float) -> int:
    """FCOS*'s first task-aligned step: ``ALIGNMENT_START_EPOCHS / epochs`` of the (possibly capped) steps."""
    return round(steps * min(1.0, ALIGNMENT_START_EPOCHS / epochs))


def finetune_plan(settings: DetectSettings, train: Annotations, seed: int, encoder: Encoder) -> FinetunePlan:
    """The A.3 schedule for this train set and batch (steps, warm-up, linearly scaled learning rate)."""
    steps, warmup = plan_steps(len(train.images), settings.batch_size, settings.epochs, settings.warmup_epochs,
                               settings.max_steps)
    lr = settings.base_lr * settings.batch_size / REFERENCE_BATCH
    return FinetunePlan(
        settings, seed=seed, steps=steps, warmup_steps=warmup, lr=lr,
        identity={"encoder": encoder.fingerprint, "train_ann": str(Path(settings.train_ann).resolve()),
                  "epochs": settings.epochs, "base_lr": settings.base_lr},
        alignment_start=alignment_start(steps, settings.epochs),
    )


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then x0.1 at 2/3 and again at 8/9 of ``steps``."""
    factor = 0.1 ** sum(step >= round(fraction * steps) for fraction in LR_DROPS)
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


# --------------------------------------------------------------------------------------------------
# Data


class DetectionBatches(StepStream):
    """Endless training batches of one process from ``start``; use with ``DataLoader(batch_size=None)``.

    Step ``s`` takes positions ``s*B .. s*B + B - 1`` of an endless stream of per-epoch permutations of the
    train images (this process: its ``B / K`` slots); workers split the steps as ``StepStream`` says.
    An unreadable image is replaced by the next usable one of the stream and listed in ``skipped`` once.
    Batch: ``{"step", "images": [uint8 [3, h, w]], "targets": [{"boxes", "labels"}], "skipped"}``.
    """

    def __init__(self, images: DetectionImages, batch_size: int, seed: int, start: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size % world_size:
            raise VitoError(f"--batch-size {batch_size} does not split over {world_size} processes")
        self.images, self.batch_size, self.seed, self.start_step = images, batch_size, seed, start
        self.local, self.offset = batch_size // world_size, rank * (batch_size // world_size)
        self._bad: set[int] = set()
        self._shuffle = EpochShuffle(seed, len(images))

    def batch(self, step: int) -> dict[str, Any]:
        images, targets, skipped = [], [], []
        for slot in range(self.offset, self.offset + self.local):
            sample = self._first_usable(step * self.batch_size + slot, skipped)
            images.append(sample["image"])
            targets.append({"boxes": sample["boxes"], "labels": sample["labels"]})
        return {"step": step, "images": images, "targets": targets, "skipped": skipped}

    def _first_usable(self, position: int, skipped: list[tuple[str, str]]) -> dict[str, Any]:
        index, epoch = self._shuffle(position)
        for offset in range(len(self.images)):
            candidate = (index + offset) % len(self.images)
            if candidate in self._bad:
                continue
            sample = self.images.item(candidate, epoch)
            if "skipped" not in sample:
                return sample
            self._bad.add(candidate)
            skipped.append(sample["skipped"])
        raise VitoError(f"none of the {len(self.images)} training images can be read: {skipped[:3]}")


# --------------------------------------------------------------------------------------------------
# Model and loss


def build_detector(encoder: Encoder, num_classes: int, plan: FinetunePlan) -> nn.Module:
    """FCOS* (or plain FCOS: ``settings.head``) on a trainable copy of ``encoder``; the new FPN and head are
    initialised from the seed."""
    score_thresh, detections = TEST_SETTINGS[plan.settings.dataset]
    build = build_fcos_star if plan.settings.head == "fcos-star" else build_fcos
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        backbone = TrainableBackbone(encoder, BACKBONE_STAGES)
        return build(backbone, backbone.channels, num_classes, plan.canvas, IMAGENET_MEAN, IMAGENET_STD,
                     score_thresh=score_thresh, detections_per_img=detections, fpn_channels=plan.settings.fpn_channels)


def as_float(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """uint8 [3, h, w] images (already on their device) as float in [0, 1], what torchvision detectors take."""
    return [image.float().div_(255) for image in images]


def detection_loss(model: nn.Module, batch: dict[str, Any], alignment_start: int = 0) -> dict[str, torch.Tensor]:
    """The fine-tune's loss: the sum of the head's three losses (FCOS: focal classification, GIoU box,
    centre-ness; FCOS*: classification, GIoU box, IoU). FCOS* assigns by task alignment from step
    ``alignment_start`` of ``batch["step"]`` on, by ATSS before."""
    head = getattr(model, "module", model).head  # under DDP, the model is wrapped
    if isinstance(head, FCOSStarHead):
        head.task_aligned = batch["step"] >= alignment_start
    losses = model(as_float(batch["images"]), batch["targets"])
    return {"loss": sum(losses.values()), **losses}


def make_optimizer(model: nn.Module, plan: FinetunePlan) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=plan.lr,
                             weight_decay=plan.settings.weight_decay)


# --------------------------------------------------------------------------------------------------
# Prediction


def predict(model: nn.Module, loader: DataLoader, annotations: Annotations, device: torch.device, precision: str,
            keep_for_pictures: set[int] | None = None, show_progress: bool = False
            ) -> tuple[list[dict[str, Any]], list[int], list[tuple[str, str]], dict[int, dict[str, np.ndarray]]]:
    """COCO-format detections of the loader's images (boxes in original pixels), the ids predicted, the
    skipped (path, reason), and the raw predictions of the ``keep_for_pictures`` ids."""
    category_ids = annotations.category_ids
    results, used, skipped, kept = [], [], [], {}
    model.eval()
    for batch in progress(loader, desc="predict", unit="batch", enabled=show_progress, leave=False):
        skipped += batch["skipped"]
        if not batch["images"]:
            continue
        with inference_mode(device, precision):
            outputs = model(as_float([image.to(device) for image in batch["images"]]))
        for image_id, scale, (height, width), output in zip(batch["image_ids"], batch["scales"], batch["sizes"],
                                                             outputs):
            boxes = boxes_to_original(output["boxes"].float(), scale, height, width).cpu()
            scores, labels = output["scores"].float().cpu(), output["labels"].cpu()
            used.append(image_id)
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append({"image_id": image_id, "category_id": category_ids[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
            if keep_for_pictures and image_id in keep_for_pictures:
                kept[image_id] = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()}
    return results, used, skipped, kept


def draw_pictures(annotations: Annotations, images_dir: Path, predictions: dict[int, dict[str, np.ndarray]],
                  out_dir: Path) -> list[Path]:
    """Ground truth | predictions PNGs for the kept val images."""
    names = [annotations.categories[c]["name"] for c in annotations.category_ids]
    paths = []
    for image_id, output in sorted(predictions.items()):
        path = image_file(images_dir, annotations.images[image_id])
        try:
            image = read_image(path).permute(1, 2, 0).numpy()
        except UnreadableImage:
            continue
        truth_boxes, truth_labels = targets_of(annotations, image_id)
        paths.append(save_detection_picture(
            image, truth_boxes.numpy(), [names[i] for i in truth_labels.tolist()], output["boxes"],
            [names[i] for i in output["labels"].tolist()], output["scores"], out_dir / f"{image_id:012d}.png",
            title=f"image {image_id}"))
    return paths


# --------------------------------------------------------------------------------------------------
# One seed


@dataclass
class SeedOutcome:
    scores: DetectionScores
    scored_images: int
    skipped: list[tuple[str, str]]
    pictures: list[Path]
    run_dir: Path
    reused: bool = False
    final_loss: float | None = None
    training_skipped: int = 0  # distinct training images missing or unreadable


def finetune_seed(encoder: Encoder, train: Annotations, val: Annotations, images_dir: Path, plan: FinetunePlan,
                  run_dir: Path, resume: bool, overwrite: bool, context: distributed.Context) -> SeedOutcome:
    """Train with the shared fine-tune loop (or continue / reuse what ``run_dir`` holds), then predict and score.

    A stop signal ends the fine-tune after a checkpoint and raises ``FinetuneStopped``.
    """
    seed_all(plan.seed)
    model = build_detector(encoder, len(train.categories), plan).to(context.device)
    images = DetectionImages(train, images_dir, train=True, canvas=plan.canvas, seed=plan.seed, flip=plan.settings.flip)
    if len(images) == 0:
        raise VitoError(f"no usable training images in {images_dir}: {len(images.skipped)} missing, "
                        f"{images.without_boxes} without boxes")

    def batches(start: int):
        return make_loader(DetectionBatches(images, plan.settings.batch_size, plan.seed, start, context.rank,
                                            context.world_size), plan.settings.num_workers)

    spec = FinetuneSpec(format=CHECKPOINT_FORMAT, iterations=plan.steps, config=plan.key(),
                        checkpoint_every=plan.settings.checkpoint_every, log_every=plan.settings.log_every,
                        precision=encoder.precision, description=f"detect seed {plan.seed}",
                        loggers=tuple(plan.settings.loggers))
    loss = functools.partial(detection_loss, alignment_start=plan.alignment_start)
    result = finetune(model, loss, make_optimizer(model, plan), lambda step: plan.lr * lr_factor(
        step, plan.steps, plan.warmup_steps), batches, run_dir, spec, context, resume=resume, overwrite=overwrite)
    result.raise_if_stopped()
    skipped = list(images.skipped) + list(result.skipped)
    outcome = evaluate_detector(model, val, images_dir, plan, run_dir, encoder.precision, context)
    outcome.skipped = skipped + outcome.skipped
    outcome.training_skipped = len({item for item, _ in skipped})
    outcome.reused = result.reused
    outcome.final_loss = None if math.isnan(result.last_loss) else result.last_loss
    return outcome


def evaluate_detector(model: nn.Module, val: Annotations, images_dir: Path, plan: FinetunePlan, run_dir: Path,
                      precision: str, context: distributed.Context) -> SeedOutcome:
    """Predict this process's share of the val images, gather, score on the images read, write files (rank 0)."""
    dataset = DetectionImages(val, images_dir, train=False, canvas=plan.canvas)
    indices = list(range(context.rank, len(dataset), context.world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=plan.settings.eval_batch_size, collate_fn=collate_detection,
                        num_workers=distributed.worker_count(plan.settings.num_workers))
    picture_ids = {image_id for image_id, _ in dataset.items[: plan.settings.pictures]}
    results, used, unread, kept = predict(model, loader, val, context.device, precision, picture_ids,
                                          show_progress=context.is_main)
    results, used, unread = (distributed.gather_objects(part) for part in (results, used, unread))
    if not used:
        raise VitoError(f"none of the {len(val.images)} val images could be read")
    scores = score_detections(val.subset(used), results, "bbox")
    pictures: list[Path] = []
    if context.is_main:
        with atomic_write(run_dir / DETECTIONS_FILE) as handle:
            json.dump(results, handle)
        pictures = draw_pictures(val, images_dir, kept, run_dir / "pictures")
    return SeedOutcome(scores, len(used), list(dataset.skipped) + unread, pictures, run_dir)
