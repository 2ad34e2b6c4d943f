"""One FCOS fine-tune of an encoder on COCO or LVIS (one seed): train, predict the val set, score.

The protocol (paper A.3, spec §12): torchvision FCOS on an FPN over the encoder's C3..C5, the A.3 views
(``vito.eval.detection_transforms``), AdamW with weight decay 1e-4 on every parameter, a base learning rate
of 1e-3 at a global batch of 128 scaled linearly with the batch, a linear warm-up over 1/4 epoch and x0.1
after 2/3 and after 8/9 of the steps, 30 epochs. An "epoch" is ``len(train images) / batch`` steps; step
``s`` takes images ``s*B .. (s+1)*B - 1`` of an endless stream of per-epoch permutations, so every step's
batch (and, with the view seeds, every pixel of it) is a pure function of ``(seed, s)``: resuming at step
``s`` continues the same run, on any number of processes.

K processes (``torchrun --nproc-per-node K -m vito eval detect ...``) split each global batch; batch norm
is synchronised and the FCOS loss normaliser averaged (``vito.models.detection``), so K processes train
like one. Mixed precision (bf16 autocast) where the encoder's precision says bf16 (CUDA), fp32 otherwise.

Files of a seed's run folder: ``checkpoints/`` (format ``vito-detect/1``), ``metrics.jsonl``, ``tb/``
(TensorBoard), ``detections.json`` (the val predictions in the COCO results format) and ``pictures/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from vito.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vito.errors import VitoError
from vito.eval.detection_data import Annotations, DetectionImages, collate_detection, image_file, targets_of
from vito.eval.detection_metrics import LVIS_MAX_DETS, DetectionScores, score_detections
from vito.eval.detection_transforms import boxes_to_original
from vito.eval.encoders import Encoder, TrainableBackbone
from vito.eval.inputs import UnreadableImage, read_image
from vito.io import atomic_write, write_json
from vito.models.detection import FPN_CHANNELS, build_fcos
from vito.train import distributed
from vito.train.checkpoint import load_checkpoint, save_checkpoint
from vito.train.run_dir import RunFolder, holds_run
from vito.train.signals import StopSignal, ignore_stop_signals_in_worker
from vito.viz.detection import save_detection_picture

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vito-detect/1"
REFERENCE_BATCH = 128  # the batch at which A.3's base learning rate is stated
LR_DROPS = (2 / 3, 8 / 9)
BACKBONE_STAGES = (-3, -2, -1)  # C3, C4, C5 (strides 8, 16, 32)
# test-time detector settings: COCO's usual 0.05 / 100; LVIS keeps more, lower-scored boxes (detectron2's
# LVIS configs: 1e-4 / 300) because its AP is computed over 300 detections per image
TEST_SETTINGS = {"coco": (0.05, 100), "lvis": (1e-4, LVIS_MAX_DETS)}


@dataclass
class FinetunePlan:
    """What one seed's fine-tune does: data, schedule, optimisation (the training-relevant settings)."""

    dataset: str
    canvas: tuple[int, int]
    batch_size: int  # global
    steps: int
    warmup_steps: int
    lr: float  # after linear scaling
    weight_decay: float
    flip: bool
    seed: int
    checkpoint_every: int = 500
    log_every: int = 20
    num_workers: int = 4
    eval_batch_size: int = 4
    pictures: int = 4
    fpn_channels: int = FPN_CHANNELS
    identity: dict[str, Any] = field(default_factory=dict)  # encoder + annotation files, for refusing changes

    def key(self) -> dict[str, Any]:
        """The settings a resumed or reused run must share (logging and loader sizes may change)."""
        return {"dataset": self.dataset, "canvas": list(self.canvas), "batch_size": self.batch_size,
                "steps": self.steps, "warmup_steps": self.warmup_steps, "lr": self.lr,
                "weight_decay": self.weight_decay, "flip": self.flip, "seed": self.seed,
                "fpn_channels": self.fpn_channels, **self.identity}


class StoppedBySignal(VitoError):
    """A fine-tune stopped by SIGTERM/SIGINT/SIGUSR1 after writing its checkpoint; ``--resume`` continues it."""

    def __init__(self, signal_name: str, run_dir: Path) -> None:
        super().__init__(f"stopped by {signal_name}; the checkpoint is in {run_dir}: rerun with --resume to continue")
        self.signal_name = signal_name


def plan_steps(num_images: int, batch_size: int, epochs: float, warmup_epochs: float,
               max_steps: int | None) -> tuple[int, int]:
    """(total steps, warm-up steps): epochs of ``num_images / batch_size`` steps; ``max_steps`` caps both."""
    per_epoch = num_images / batch_size
    steps = max(1, round(epochs * per_epoch))
    warmup = round(warmup_epochs * per_epoch)
    if max_steps is not None:
        steps, warmup = min(steps, max_steps), min(warmup, max_steps)
    return steps, min(warmup, steps)


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then x0.1 at 2/3 and again at 8/9 of ``steps``."""
    factor = 0.1 ** sum(step >= round(fraction * steps) for fraction in LR_DROPS)
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


# --------------------------------------------------------------------------------------------------
# Data


class StepBatches(Sampler):
    """This process's share of the global batch of every step from ``start`` on: ``(index, epoch)`` lists."""

    def __init__(self, num_images: int, batch_size: int, seed: int, start: int, steps: int, rank: int,
                 world_size: int) -> None:
        if batch_size % world_size:
            raise VitoError(f"--batch-size {batch_size} must be divisible by the {world_size} processes")
        self.n, self.batch, self.seed, self.start, self.steps = num_images, batch_size, seed, start, steps
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps - self.start

    def _item(self, position: int) -> tuple[int, int]:
        epoch = position // self.n
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._permutations[epoch][position % self.n]), epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.steps):
            first = step * self.batch + self.offset
            yield [self._item(p) for p in range(first, first + self.local)]


class EpochIndexed(torch.utils.data.Dataset):
    """A ``DetectionImages`` read with ``(index, epoch)`` keys, so that views follow the stream's epochs."""

    def __init__(self, images: DetectionImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        return self.images.item(index, epoch)


def _loader(dataset, batch_sampler=None, batch_size=None, num_workers: int = 0, indices=None) -> DataLoader:
    kwargs: dict[str, Any] = {"collate_fn": collate_detection, "num_workers": num_workers}
    if num_workers:
        kwargs.update(worker_init_fn=ignore_stop_signals_in_worker, persistent_workers=False)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    subset = torch.utils.data.Subset(dataset, list(indices))
    return DataLoader(subset, batch_size=batch_size, shuffle=False, **kwargs)


def _to_device(batch: dict[str, Any], device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images = [image.to(device, non_blocking=True).float().div_(255) for image in batch["images"]]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["targets"]]
    return images, targets


# --------------------------------------------------------------------------------------------------
# Model and one training step


def build_detector(encoder: Encoder, num_classes: int, plan: FinetunePlan) -> nn.Module:
    """FCOS on a trainable copy of ``encoder``; the new FPN and head are initialised from the seed."""
    score_thresh, detections = TEST_SETTINGS[plan.dataset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        backbone = TrainableBackbone(encoder, BACKBONE_STAGES)
        return build_fcos(backbone, backbone.channels, num_classes, plan.canvas, IMAGENET_MEAN, IMAGENET_STD,
                          score_thresh=score_thresh, detections_per_img=detections, fpn_channels=plan.fpn_channels)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def training_step(model: nn.Module, batch: dict[str, Any], optimizer: torch.optim.Optimizer, device: torch.device,
                  precision: str) -> dict[str, torch.Tensor]:
    """Forward, sum of the three FCOS losses, backward, AdamW step. Returns the (detached) losses.

    A process whose share of the batch was entirely unreadable still takes part (a zero loss over every
    parameter) so that DDP's gradient all-reduce never waits for it forever.
    """
    optimizer.zero_grad(set_to_none=True)
    if batch["images"]:
        images, targets = _to_device(batch, device)
        with autocast(precision, device):
            losses = model(images, targets)
        loss = sum(losses.values())
    else:
        losses = {}
        loss = sum(p.sum() for p in model.parameters()) * 0.0
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}


def wrap_detector(model: nn.Module, context: distributed.Context) -> nn.Module:
    """Synchronised batch norm + DDP for K processes (the model itself for one), with the encoder re-traced
    so that its torchvision feature extractor runs the synchronised batch norms, not the replaced ones."""
    wrapped = distributed.wrap_for_training(model, context)
    if context.world_size > 1:
        for module in model.modules():
            if isinstance(module, Encoder):
                module.forget_extractors()
    return wrapped


def make_optimizer(model: nn.Module, plan: FinetunePlan) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)


# --------------------------------------------------------------------------------------------------
# Prediction


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, annotations: Annotations, device: torch.device, precision: str,
            keep_for_pictures: set[int] | None = None, progress: bool = False
            ) -> tuple[list[dict[str, Any]], list[int], list[tuple[str, str]], dict[int, dict[str, np.ndarray]]]:
    """COCO-format detections of the loader's images (boxes in original pixels), the ids predicted, the
    skipped (path, reason), and the raw predictions of the ``keep_for_pictures`` ids."""
    category_ids = annotations.category_ids
    results, used, skipped, kept = [], [], [], {}
    model.eval()
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        skipped += batch["skipped"]
        if not batch["images"]:
            continue
        images, _ = _to_device(batch, device)
        with autocast(precision, device):
            outputs = model(images)
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


def _gather(values: list[Any]) -> list[Any]:
    """Concatenate a list over processes (rank order); the identity for one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return [v for part in parts for v in part]


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
    scores: DetectionScores | None  # None when stopped by a signal before the end
    scored_images: int
    skipped: list[tuple[str, str]]
    pictures: list[Path]
    run_dir: Path
    stopped_by: str | None = None
    reused: bool = False
    final_loss: float | None = None


def finetune_seed(encoder: Encoder, train: Annotations, val: Annotations, images_dir: Path, plan: FinetunePlan,
                  run_dir: Path, resume: bool, overwrite: bool, context: distributed.Context) -> SeedOutcome:
    """Train (or resume, or reuse a finished run with the same plan), predict the val images and score them."""
    saved = _saved_state(run_dir) if holds_run(run_dir) and not overwrite else None
    if saved is not None and saved.get("plan") != _plain(plan.key()):
        changes = sorted(k for k in set(saved["plan"]) | set(plan.key())
                         if saved["plan"].get(k) != _plain(plan.key()).get(k))
        raise VitoError(f"{run_dir} holds a detection fine-tune with other settings ({', '.join(changes)}); "
                        "use another --out, or --overwrite to replace it")
    finished = saved is not None and saved["step"] >= plan.steps
    with RunFolder(run_dir, resume=resume or finished, overwrite=overwrite, is_main=context.is_main, kind="detect"):
        model = build_detector(encoder, len(train.categories), plan).to(context.device)
        optimizer = make_optimizer(model, plan)
        start = 0
        if saved is not None and (resume or finished):
            state = load_checkpoint(run_dir, expected_format=CHECKPOINT_FORMAT)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = state["step"]
        stopped, final_loss, skipped = None, None, []
        if start < plan.steps:
            stopped, final_loss, skipped = _train(model, optimizer, train, images_dir, plan, run_dir, start,
                                                  encoder.precision, context)
        if stopped is not None:
            return SeedOutcome(None, 0, skipped, [], run_dir, stopped_by=stopped, final_loss=final_loss)
        return _evaluate(model, val, images_dir, plan, run_dir, encoder.precision, context, skipped,
                         reused=start >= plan.steps, final_loss=final_loss)


def _saved_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state = load_checkpoint(run_dir, expected_format=CHECKPOINT_FORMAT)
    except VitoError:
        return None
    return {"step": state["step"], "plan": state["plan"]}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer, plan: FinetunePlan) -> None:
    save_checkpoint(run_dir, {"format": CHECKPOINT_FORMAT, "step": step, "plan": _plain(plan.key()),
                              "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, keep=2)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _train(model: nn.Module, optimizer, train: Annotations, images_dir: Path, plan: FinetunePlan, run_dir: Path,
           start: int, precision: str, context: distributed.Context
           ) -> tuple[str | None, float | None, list[tuple[str, str]]]:
    """Steps ``start .. plan.steps - 1``; a checkpoint every ``checkpoint_every`` steps, at a stop and at the end."""
    dataset = DetectionImages(train, images_dir, train=True, canvas=plan.canvas, seed=plan.seed, flip=plan.flip)
    if len(dataset) == 0:
        raise VitoError(f"no usable training images: {len(dataset.skipped)} missing, {dataset.without_boxes} "
                        "without boxes")
    sampler = StepBatches(len(dataset), plan.batch_size, plan.seed, start, plan.steps, context.rank,
                          context.world_size)
    loader = _loader(EpochIndexed(dataset), batch_sampler=sampler, num_workers=plan.num_workers)
    wrapped = wrap_detector(model, context)
    wrapped.train()
    scheduler = _scheduler(optimizer, plan, start)
    writer = _tensorboard(run_dir) if context.is_main else None
    skipped = list(dataset.skipped)
    bar = tqdm(total=plan.steps, initial=start, desc=f"detect seed {plan.seed}", unit="step",
               disable=not context.is_main)
    stop, loss_value = StopSignal(), None
    with stop.installed():
        for step, batch in enumerate(loader, start=start):
            skipped += batch["skipped"]
            losses = training_step(wrapped, batch, optimizer, context.device, precision)
            scheduler.step()
            values = distributed.mean_over_processes(torch.stack(list(losses.values())).float()).tolist()
            loss_value = values[0]
            if not math.isfinite(loss_value):
                raise VitoError(f"the detection loss became {loss_value} at step {step}; lower --base-lr")
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if context.is_main and (done % plan.log_every == 0 or done == plan.steps or done == start + 1):
                _log(run_dir, writer, done, dict(zip(losses, values)), optimizer.param_groups[0]["lr"])
            stop_now = _agree(stop.requested)
            if stop_now or done == plan.steps or done % plan.checkpoint_every == 0:
                if context.is_main:
                    _checkpoint(run_dir, done, model, optimizer, plan)
                _barrier()
            if stop_now:
                bar.close()
                return stop.name or "SIGTERM", loss_value, skipped
    bar.close()
    if writer is not None:
        writer.close()
    return None, loss_value, skipped


def _scheduler(optimizer, plan: FinetunePlan, start: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The A.3 schedule, positioned so that the next step (``start``) gets ``lr * lr_factor(start)``."""
    for group in optimizer.param_groups:
        group["initial_lr"] = plan.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, plan.steps, plan.warmup_steps),
                                             last_epoch=start - 1)


def _agree(requested: bool) -> bool:
    """Every process stops after the same step: any one's request counts for all."""
    flag = torch.tensor([float(requested)])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter  # tensorboard's import is slow; only a training run pays

    return SummaryWriter(str(run_dir / "tb"))


def _log(run_dir: Path, writer, step: int, losses: dict[str, float], lr: float) -> None:
    record = {"step": step, "lr": lr, **losses}
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is not None:
        for name, value in record.items():
            if name != "step":
                writer.add_scalar(f"detect/{name}", value, step)


def _evaluate(model: nn.Module, val: Annotations, images_dir: Path, plan: FinetunePlan, run_dir: Path,
              precision: str, context: distributed.Context, skipped: list[tuple[str, str]], reused: bool,
              final_loss: float | None) -> SeedOutcome:
    dataset = DetectionImages(val, images_dir, train=False, canvas=plan.canvas)
    indices = range(context.rank, len(dataset), context.world_size)
    loader = _loader(dataset, batch_size=plan.eval_batch_size, num_workers=plan.num_workers, indices=indices)
    picture_ids = {image_id for image_id, _ in dataset.items[: plan.pictures]}
    results, used, unread, kept = predict(_unwrap(model), loader, val, context.device, precision, picture_ids,
                                          progress=context.is_main)
    results, used, unread = _gather(results), _gather(used), _gather(unread)
    skipped = skipped + list(dataset.skipped) + unread
    pictures: list[Path] = []
    scores = None
    if used:
        scores = score_detections(val.subset(used), results, "bbox")
    if context.is_main:
        with atomic_write(run_dir / "detections.json") as handle:
            json.dump(results, handle)
        pictures = draw_pictures(val, images_dir, kept, run_dir / "pictures")
        write_json(run_dir / "scores.json", {"metrics": scores.metrics if scores else None,
                                             "scored_images": len(used)})
    if scores is None:
        raise VitoError(f"none of the {len(val.images)} val images could be read")
    return SeedOutcome(scores, len(used), skipped, pictures, run_dir, reused=reused, final_loss=final_loss)
