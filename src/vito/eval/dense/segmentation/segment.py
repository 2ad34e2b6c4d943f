"""``vito eval segment``: semantic-segmentation transfer on PASCAL VOC 2012 and ADE20K, scored like mmseg.

Why one evaluation with two modes: the number a fine-tune reports and the number any method's masks get
must come from the same reader and the same metric.

- Fine-tune (``--encoder ENC``): choose the lr of the sweep on images held out of the training split
  (``vito.eval.dense.segmentation.selection``: each lr fine-tuned once on the rest, in
  ``OUT/runs/select_lr<LR>_seed<S>/``, and scored on the held-out images; ``--lr-selection val`` scores every
  (lr, seed) on the evaluation split instead), then fine-tune a copy of the encoder with the dataset's head
  (``vito.eval.dense.segmentation.recipe``: protocols, model, loss, inference) for every seed at the chosen lr on
  the whole training split in ``OUT/runs/lr<LR>_seed<S>/`` (checkpoints, TensorBoard, ``metrics.jsonl``,
  ``predictions/<id>.png``, ``pictures/``), score it on the evaluation split, and report the mean ± sd over
  seeds with the whole sweep, the held-out ids and how the lr was chosen in the Result. Finished runs with the
  same settings are reused; stopped ones continue with ``--resume``; different settings in the same folder need
  ``--overwrite``. ``torchrun --nproc-per-node K -m vito eval segment ...`` fine-tunes on K processes (the
  global batch is split).
- Scoring only (``--predictions PRED_DIR``): reads ``PRED_DIR/<id>.png`` (class indices, mode P or L, at each
  image's original size) for every id of the split and accumulates mmseg's ``IoUMetric`` areas
  (``vito.eval.dense.segmentation.metrics``). ADE20K predictions are 0..149 by default (mmseg's convention after
  ``reduce_zero_label``); ``--label-offset 1`` takes the official devkit's 1..150. Prediction values outside
  the classes count as wrong (as in mmseg) and are reported (``out_of_range_pixels`` and the values seen).

Missing or unreadable masks and predictions, and predictions whose size differs from their ground truth, are
skipped and listed; the coverage says how many images were scored.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vito.data.images import UnreadableImage, read_index_png
from vito.engine import distributed
from vito.engine.checkpoint import seed_all
from vito.engine.finetune import FinetuneSpec, finetune, make_loader
from vito.engine.loggers import LoggerSettings
from vito.engine.progress import write
from vito.errors import DataError, VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result, mean_and_sd
from vito.eval.dense.segmentation.augment import SegmentationBatches
from vito.eval.dense.segmentation.data import SegmentationDataset, open_dataset
from vito.eval.dense.segmentation.metrics import SegmentationAreas, per_class_table, segmentation_scores
from vito.eval.dense.segmentation.recipe import (
    CHECKPOINT_FORMAT,
    PROTOCOLS,
    Protocol,
    build_model,
    learning_rate,
    make_optimizer,
    predict_split,
    segmentation_loss,
)
from vito.eval.dense.segmentation.selection import HELDOUT_SPLIT, HeldOut, hold_out
from vito.io import write_json

SCORES_FILE = "scores.json"


@dataclass
class SegmentSettings(LoggerSettings):
    dataset: Literal["voc", "ade20k"] = field(metadata={
        "help": "voc (PASCAL VOC 2012) or ade20k (ADEChallengeData2016)"})
    root: Path = field(metadata={"help": "dataset folder: VOC2012 (or VOCdevkit), or ADEChallengeData2016"})
    split: str = field(default="val", metadata={"help": "split to evaluate on: val (VOC also train, trainaug)"})
    predictions: Path | None = field(default=None, metadata={
        "help": "score this folder of class-index PNGs (PRED_DIR/<id>.png, mode P or L) instead of fine-tuning"})
    label_offset: int = field(default=0, metadata={
        "help": "subtracted from every predicted value: 1 for ADE20K predictions in the official 1..150 convention"})
    train_split: str | None = field(default=None, metadata={
        "help": "fine-tuning split (default: the protocol's: VOC trainaug, ADE20K train)"})
    iters: int | None = field(default=None, metadata={
        "help": "fine-tuning iterations (default: the protocol's: VOC 30000, ADE20K 160000)"})
    lrs: list[float] | None = field(default=None, metadata={
        "help": "base lrs to sweep (default: VOC 5 log-spaced in [1e-3, 1e-1]; ADE20K 0.01)"})
    seeds: list[int] | None = field(default=None, metadata={"help": "seeds per lr (default: VOC 0..4; ADE20K 0)"})
    batch_size: int | None = field(default=None, metadata={"help": "global batch (default 16), split over processes"})
    crop_size: int | None = field(default=None, metadata={
        "help": "training crop (default: VOC 513, ADE20K 512); the test size follows (VOC pad, ADE20K resize)"})
    resume: bool = field(default=False, metadata={"help": "continue stopped fine-tunes in OUT/runs/"})
    overwrite: bool = field(default=False, metadata={"help": "replace the fine-tunes in OUT/runs/ (other settings)"})
    num_workers: int = field(default=4, metadata={"help": "data-loading worker processes per process"})
    checkpoint_every: int = field(default=1000, metadata={"help": "checkpoint every N iterations"})
    pictures: int = field(default=4, metadata={"help": "val images drawn as image | ground truth | prediction"})
    lr_selection: Literal["heldout", "val"] = field(default="heldout", metadata={
        "help": "choose the lr on images held out of the training split (BYOL: 2,119 of train_aug), or on the "
                "evaluation split itself (optimistic)"})
    heldout_seed: int = field(default=0, metadata={"help": "seed of the random held-out images"})
    loss_average: Literal["all_pixels", "labelled_pixels"] | None = field(default=None, metadata={
        "help": "the pixel cross-entropy's denominator (default: the protocol's: ADE20K all pixels as mmseg, VOC "
                "labelled pixels)"})


@register
class Segment(Evaluation):
    name = "segment"
    Settings = SegmentSettings
    needs_encoder = "optional"
    group = "dense"
    headline = "mIoU"  # mmseg's mIoU, Table B.3's PASCAL and ADE20K columns
    help = "semantic segmentation on PASCAL VOC / ADE20K: fine-tune, or score masks; mmseg's mIoU, aAcc, mAcc"
    description = ("With --encoder: fine-tune it with the dataset's protocol (VOC: dilated FCN, lr sweep, 5 seeds; "
                   "ADE20K: UperNet 160k) and report mIoU on val. With --predictions PRED_DIR: score any method's "
                   "masks (PRED_DIR/<id>.png, class indices). Metrics as mmsegmentation's IoUMetric; for ADE20K also "
                   "the official devkit's mean over all 150 classes. See `vito docs segmentation`.")

    def check(self, settings: SegmentSettings, has_encoder: bool) -> None:
        if settings.predictions is not None and has_encoder:
            raise VitoError("vito eval segment: give --encoder ENC (fine-tune) or --predictions PRED_DIR (score), "
                            "not both")
        if settings.predictions is None and not has_encoder:
            raise VitoError("vito eval segment needs --encoder ENC (fine-tune) or --predictions PRED_DIR (score "
                            "class-index PNGs named <id>.png)")
        if settings.predictions is not None and not Path(settings.predictions).is_dir():
            raise VitoError(f"--predictions {settings.predictions} is not a folder")
        if settings.resume and settings.overwrite:
            raise VitoError("--resume and --overwrite exclude each other")
        fine_tune_only = {"--lr-selection val": settings.lr_selection != "heldout",
                          "--heldout-seed": settings.heldout_seed != 0, "--loss-average": settings.loss_average}
        if settings.predictions is not None and any(fine_tune_only.values()):
            raise VitoError(f"{', '.join(k for k, v in fine_tune_only.items() if v)}: settings of the fine-tune "
                            "(--encoder), not of scoring --predictions")

    def run(self, encoder: Encoder | None, settings: SegmentSettings, out_dir: Path) -> Result:
        dataset = open_dataset(settings.dataset, settings.root, settings.split)
        if encoder is None:
            areas, skipped = score_prediction_folder(dataset, Path(settings.predictions), settings.label_offset)
            return segmentation_result(dataset, areas, skipped, note="images with a readable mask and prediction")
        return run_sweep(encoder, settings, dataset, Path(out_dir))


def score_prediction_folder(
    dataset: SegmentationDataset, folder: Path, label_offset: int = 0
) -> tuple[SegmentationAreas, list[tuple[str, str]]]:
    """Accumulate ``folder/<id>.png`` against the ground truth of every item; (areas, skipped items)."""
    areas = SegmentationAreas(dataset.num_classes)
    skipped: list[tuple[str, str]] = []
    for item in dataset.items:
        try:
            label = dataset.read_mask(item)
            pred = read_index_png(folder / f"{item.id}.png", "prediction")
        except UnreadableImage as error:
            skipped.append((item.id, str(error)))
            continue
        if pred.shape != label.shape:
            skipped.append((item.id, f"prediction is {pred.shape[1]}x{pred.shape[0]}, ground truth "
                                     f"{label.shape[1]}x{label.shape[0]} (predict at the original size)"))
            continue
        areas.update(pred - label_offset, label)
    if areas.images == 0:
        raise DataError(f"no image of {dataset.name} {dataset.split} could be scored from {folder}; first problem: "
                        f"{skipped[0][1] if skipped else 'none'}")
    return areas, skipped


def segmentation_result(
    dataset: SegmentationDataset, areas: SegmentationAreas, skipped: list[tuple[str, str]], note: str
) -> Result:
    """The Result of accumulated areas: mmseg's aAcc/mIoU/mAcc, the devkit mean for ADE20K, per-class rows."""
    scores = segmentation_scores(areas)
    metrics = {
        "mIoU": Metric(scores.miou, "proportion", "mIoU (mmseg: mean over classes present)"),
        "aAcc": Metric(scores.aacc, "proportion", "aAcc (pixel accuracy)"),
        "mAcc": Metric(scores.macc, "proportion", "mAcc (mean class accuracy)"),
    }
    if dataset.name == "ade20k":
        metrics["devkit_mIoU"] = Metric(scores.devkit_miou, "proportion",
                                        "mIoU over all 150 classes (official ADE20K devkit)")
    metrics["out_of_range_pixels"] = Metric(areas.out_of_range_pixels, "count",
                                            "evaluated pixels predicted outside the classes (counted wrong)")
    return Result(
        evaluation="segment",
        metrics=metrics,
        settings={"num_classes": dataset.num_classes, "reduce_zero_label": dataset.reduce_zero_label,
                  "ignore_index": 255, "out_of_range_values": sorted(areas.out_of_range_values)},
        coverage=Coverage(areas.images, len(dataset.items), note),
        tables={"per_class": per_class_table(areas, scores, dataset.class_names)},
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------------
# Fine-tuning: the sweep over lrs and seeds


def protocol_for(settings: SegmentSettings) -> Protocol:
    """The dataset's preset with the settings' overrides applied (crop size also resizes the VOC test pad)."""
    protocol = PROTOCOLS[settings.dataset]
    changes: dict[str, Any] = {}
    for name, value in (("train_split", settings.train_split), ("iterations", settings.iters),
                        ("batch_size", settings.batch_size), ("loss_average", settings.loss_average)):
        if value is not None:
            changes[name] = value
    if settings.lrs:
        changes["lrs"] = tuple(settings.lrs)
    if settings.seeds:
        changes["seeds"] = tuple(settings.seeds)
    if settings.crop_size is not None:  # the scales that go with the crop follow it (ADE20K: 512 ↔ (2048, 512))
        crop = settings.crop_size
        changes["crop"] = crop
        fit = None if protocol.augment.fit_scale is None else _scaled(protocol.augment.fit_scale, crop / protocol.crop)
        changes["augment"] = dataclasses.replace(protocol.augment, crop=crop, fit_scale=fit)
        scaled_test = _scaled(protocol.test_size, crop / protocol.crop) if protocol.test_mode == "resize-fit" else crop
        changes["test_size"] = scaled_test
    protocol = dataclasses.replace(protocol, **changes)
    if protocol.iterations < 1 or protocol.batch_size < 1:
        raise VitoError("--iters and --batch-size must be positive")
    return protocol


def _scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return (round(size[0] * factor), round(size[1] * factor))


@dataclass
class RunScores:
    lr: float
    seed: int
    run_dir: Path
    areas: SegmentationAreas
    skipped: list[tuple[str, str]]
    pictures: list[Path]
    reused: bool
    training_skipped: int = 0  # distinct training images the fine-tune met unreadable


@dataclass(frozen=True)
class _Sweep:
    """What every fine-tune of one ``vito eval segment`` shares."""

    encoder: Encoder
    settings: SegmentSettings
    protocol: Protocol
    context: distributed.Context
    out_dir: Path


def run_sweep(encoder: Encoder, settings: SegmentSettings, val: SegmentationDataset, out_dir: Path) -> Result:
    """Choose the lr (``selection``: on held-out training images, or on ``val``; nothing to choose with one lr),
    fine-tune it for every seed on the whole training split and score on ``val``: mean ± sd over seeds."""
    protocol = protocol_for(settings)
    train = open_dataset(settings.dataset, settings.root, protocol.train_split)
    if train.num_classes != val.num_classes:
        raise DataError(f"{protocol.train_split} and {val.split} have different classes")
    how = settings.lr_selection if len(protocol.lrs) > 1 else "single lr"
    held = hold_out(train, val, settings.heldout_seed) if how == "heldout" else None  # checked before any training
    chosen_on = HELDOUT_SPLIT if held is not None else val.split
    device = next(encoder.parameters()).device
    sweep = _Sweep(encoder, settings, protocol, distributed.setup("cuda" if device.type == "cuda" else "cpu"), out_dir)
    try:
        if held is not None:  # each lr once (the first seed) on the rest of the training split
            trials = [_one_run(sweep, held.fit, held.heldout, lr, protocol.seeds[0], held) for lr in protocol.lrs]
        else:
            trials = [_one_run(sweep, train, val, lr, seed) for lr in protocol.lrs for seed in protocol.seeds]
        per_lr = _per_lr(trials, protocol, chosen_on)
        best = max(per_lr, key=lambda row: -1.0 if row["mIoU_mean"] is None else row["mIoU_mean"])["lr"]
        runs = [_one_run(sweep, train, val, best, seed) for seed in protocol.seeds] if held is not None else \
            [r for r in trials if r.lr == best]
    finally:
        distributed.cleanup()
    result = _sweep_result(runs, protocol, val, out_dir)
    result.metrics["best_lr"] = Metric(best, "value", {"heldout": "base lr chosen on held-out training images",
                                                       "val": f"base lr chosen on {val.split} (optimistic)",
                                                       "single lr": "base lr (one given: nothing chosen)"}[how])
    devkit = settings.dataset == "ade20k"
    rows = [_sweep_row(r, chosen_on, devkit, out_dir) for r in trials]
    if held is not None:
        rows += [_sweep_row(r, val.split, devkit, out_dir) for r in runs]
    result.tables = {"sweep": rows, "per_lr": per_lr, **result.tables}
    result.settings["selection"] = {"how": how, "chosen_on": chosen_on, **(held.identity() if held else {})}
    if held is not None:  # the held-out ids themselves (result.md shows the first ones, result.json all)
        result.tables["heldout_ids"] = [{"id": i} for i in held.ids]
    return result


def _per_lr(trials: list[RunScores], protocol: Protocol, split: str) -> list[dict[str, Any]]:
    """Each lr's mean (and sd) mIoU over its runs on ``split``: what the lr is chosen by (the first of equal ones)."""
    rows = []
    for lr in protocol.lrs:
        mean, sd = mean_and_sd([segmentation_scores(r.areas).miou for r in trials if r.lr == lr])
        rows.append({"lr": lr, "mIoU_mean": mean, "mIoU_sd": sd, "seeds": sum(r.lr == lr for r in trials),
                     "scored_on": split})
    return rows


def _sweep_row(run: RunScores, split: str, devkit: bool, out_dir: Path) -> dict[str, Any]:
    scores = segmentation_scores(run.areas)
    return {"lr": run.lr, "seed": run.seed, "scored_on": split, "mIoU": scores.miou, "aAcc": scores.aacc,
            "mAcc": scores.macc, **({"devkit_mIoU": scores.devkit_miou} if devkit else {}), "reused": run.reused,
            "run": str(run.run_dir.relative_to(out_dir))}


def _run_config(sweep: _Sweep, train: SegmentationDataset, lr: float, seed: int,
                held: HeldOut | None) -> dict[str, Any]:
    """Everything that decides what a fine-tune learns: its identity in the run folder."""
    settings, protocol, encoder = sweep.settings, sweep.protocol, sweep.encoder
    config = {
        "evaluation": "segment", "dataset": settings.dataset, "root": str(Path(settings.root).resolve()),
        "train_split": protocol.train_split, "num_classes": train.num_classes, "encoder": encoder.fingerprint,
        "encoder_name": encoder.name, "head": protocol.head, "iterations": protocol.iterations,
        "batch_size": protocol.batch_size, "lr": lr, "seed": seed, "weight_decay": protocol.weight_decay,
        "momentum": 0.9, "schedule": protocol.schedule, "min_lr": protocol.min_lr, "aux_weight": protocol.aux_weight,
        "augment": dataclasses.asdict(protocol.augment),
    }
    if protocol.loss_average != "labelled_pixels":  # added later: absent means labelled pixels (older runs)
        config["loss_average"] = protocol.loss_average
    if held is not None:  # trained without the held-out images
        config["without_heldout"] = held.identity()
    return config


def _one_run(sweep: _Sweep, train: SegmentationDataset, scored: SegmentationDataset, lr: float, seed: int,
             held: HeldOut | None = None) -> RunScores:
    """Fine-tune one (lr, seed) on ``train`` (or reuse / continue it) and score it on ``scored``."""
    settings, protocol, context = sweep.settings, sweep.protocol, sweep.context
    name = f"lr{lr:g}_seed{seed}"
    run_dir = sweep.out_dir / "runs" / (f"select_{name}" if held is not None else name)
    config = _run_config(sweep, train, lr, seed, held)
    seed_all(seed)
    model = build_model(sweep.encoder, protocol, train.num_classes).to(context.device)
    optimizer = make_optimizer(model, lr, protocol)

    def batches(start: int):
        stream = SegmentationBatches(train, protocol.augment, seed, protocol.batch_size, context.rank,
                                     context.world_size, start)
        return make_loader(stream, settings.num_workers)

    spec = FinetuneSpec(format=CHECKPOINT_FORMAT, iterations=protocol.iterations, config=config,
                        checkpoint_every=settings.checkpoint_every, precision=sweep.encoder.precision,
                        description=f"segment {settings.dataset} lr {lr:g} seed {seed}")
    loss = partial(segmentation_loss, aux_weight=protocol.aux_weight, average=protocol.loss_average)
    outcome = finetune(model, loss, optimizer, lambda step: learning_rate(step, lr, protocol, protocol.iterations),
                       batches, run_dir, spec, context, resume=settings.resume, overwrite=settings.overwrite)
    outcome.raise_if_stopped()
    skipped = [(f"train {item}", reason) for item, reason in dict(outcome.skipped).items()]
    found = _saved_scores(run_dir, config, scored)
    if found is None:
        predictions = predict_split(model, scored, protocol, run_dir, context.device, sweep.encoder.precision,
                                    settings.pictures if held is None else 0)
        found = predictions.areas, predictions.skipped, predictions.pictures
        if context.is_main:
            write_json(run_dir / SCORES_FILE, {"config": config, "split": scored.split,
                                               "areas": predictions.areas.as_array().tolist(),
                                               "images": predictions.areas.images, "skipped": predictions.skipped,
                                               "pictures": [p.name for p in predictions.pictures]})
    areas, scored_skipped, pictures = found
    return RunScores(lr, seed, run_dir, areas, skipped + list(scored_skipped), pictures, outcome.reused, len(skipped))


def _saved_scores(run_dir: Path, config: dict[str, Any], scored: SegmentationDataset):
    """The areas of a finished run on ``scored``, when they were computed for the same config and split."""
    path = run_dir / SCORES_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        if saved.get("config") != json.loads(json.dumps(config)) or saved.get("split") != scored.split:
            return None
        rows = np.asarray(saved["areas"], dtype=np.int64)
        areas = SegmentationAreas(scored.num_classes, *rows, images=int(saved["images"]))
        pictures = [run_dir / "pictures" / name for name in saved["pictures"]]
        return areas, [(str(item), str(reason)) for item, reason in saved["skipped"]], pictures
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:  # cut off or damaged: scored again
        write(f"{path} cannot be read ({type(error).__name__}: {error}): the fine-tune's predictions are scored again",
              file=sys.stderr)
        return None


def _sweep_result(chosen: list[RunScores], protocol: Protocol, val: SegmentationDataset, out_dir: Path) -> Result:
    """The Result of the chosen lr's runs on ``val``: each metric's mean and sd over the seeds."""
    scores = [segmentation_scores(r.areas) for r in chosen]
    first = chosen[0]
    result = segmentation_result(val, first.areas, first.skipped, note=f"{val.split} images scored (best lr run)")
    result.coverage.training_skipped = max(r.training_skipped for r in chosen)
    del result.metrics["out_of_range_pixels"]  # a fine-tuned head predicts classes only
    for key, name in (("mIoU", "miou"), ("aAcc", "aacc"), ("mAcc", "macc"), ("devkit_mIoU", "devkit_miou")):
        if key in result.metrics:
            mean, sd = mean_and_sd([getattr(s, name) for s in scores])
            label = result.metrics[key].label  # the sd is named as its metric is: "devkit_mIoU" is no label
            seeds = f"{len(chosen)} seed{'s' if len(chosen) != 1 else ''}"  # never "1 seeds"
            result.metrics[key].value, result.metrics[key].label = mean, f"{label}, mean over {seeds}"
            result.metrics[f"{key}_sd"] = Metric(sd, "value", f"{label}: sd over {seeds}")
    if len(chosen) > 1:  # per-class IoU: mean over the seeds where it is defined; the areas are the first seed's
        stacked = np.stack([s.iou for s in scores])
        defined = (~np.isnan(stacked)).sum(0)
        iou = np.where(defined > 0, np.nansum(stacked, 0) / np.maximum(defined, 1), np.nan)
        for row, value in zip(result.tables["per_class"], iou):
            row["iou"] = None if np.isnan(value) else float(value)
    result.settings.update({"protocol": dataclasses.asdict(protocol), "source": protocol.source})
    result.pictures = [str(p.relative_to(out_dir)) for p in first.pictures]
    result.artifacts = {"predictions": str((first.run_dir / "predictions").relative_to(out_dir)),
                        "checkpoint": str((first.run_dir / "checkpoints" / "last.pt").relative_to(out_dir))}
    return result
