"""``vito eval segment``: semantic-segmentation transfer on PASCAL VOC 2012 and ADE20K, scored like mmseg.

Why one evaluation with two modes: the number a fine-tune reports and the number any method's masks get
must come from the same reader and the same metric. The scoring-only mode (``--predictions PRED_DIR``)
reads ``PRED_DIR/<id>.png`` (class indices, mode P or L, at each image's original size) for every id of the
split and accumulates mmseg's ``IoUMetric`` areas (``vito.eval.segmentation_metrics``). ADE20K predictions
are 0..149 by default (mmseg's convention after ``reduce_zero_label``); ``--label-offset 1`` takes the
official devkit's 1..150. Prediction values outside the classes count as wrong (as in mmseg) and are
reported (``out_of_range_pixels`` and the values seen). Missing or unreadable masks and predictions, and
predictions whose size differs from their ground truth, are skipped and listed; the coverage says how many
images were scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vito.data.segmentation import SegmentationDataset, UnreadableFile, open_dataset, read_index_png
from vito.errors import DataError, VitoError
from vito.eval.base import Coverage, Evaluation, Metric, Result, register
from vito.eval.encoders import Encoder
from vito.eval.segmentation_metrics import SegmentationAreas, per_class_table, segmentation_scores


@dataclass
class SegmentSettings:
    dataset: Literal["voc", "ade20k"] = field(metadata={
        "help": "voc (PASCAL VOC 2012) or ade20k (ADEChallengeData2016)"})
    root: Path = field(metadata={"help": "dataset folder: VOC2012 (or VOCdevkit), or ADEChallengeData2016"})
    split: str = field(default="val", metadata={"help": "split to score: val (VOC also train, trainaug; ADE20K train)"})
    predictions: Path | None = field(default=None, metadata={
        "help": "score this folder of class-index PNGs (PRED_DIR/<id>.png, mode P or L) instead of fine-tuning"})
    label_offset: int = field(default=0, metadata={
        "help": "subtracted from every predicted value: 1 for ADE20K predictions in the official 1..150 convention"})


@register
class Segment(Evaluation):
    name = "segment"
    Settings = SegmentSettings
    needs_encoder = False
    group = "dense"
    help = "semantic segmentation on PASCAL VOC / ADE20K: mmseg's mIoU, aAcc, mAcc and per-class IoU"
    description = ("Score any method's masks with --predictions PRED_DIR (PRED_DIR/<id>.png, class indices, one per "
                   "id of the split list). Metrics as mmsegmentation's IoUMetric; for ADE20K also the official "
                   "devkit's mean over all 150 classes. See docs/segmentation.md.")

    def check(self, settings: SegmentSettings, has_encoder: bool) -> None:
        super().check(settings, has_encoder)
        if settings.predictions is None:
            raise VitoError("vito eval segment needs --predictions PRED_DIR (class-index PNGs named <id>.png)")
        if not Path(settings.predictions).is_dir():
            raise VitoError(f"--predictions {settings.predictions} is not a folder")

    def run(self, encoder: Encoder | None, settings: SegmentSettings, out_dir: Path) -> Result:
        dataset = open_dataset(settings.dataset, settings.root, settings.split)
        areas, skipped = score_prediction_folder(dataset, Path(settings.predictions), settings.label_offset)
        return segmentation_result(dataset, areas, skipped, note="images with a readable mask and prediction")


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
        except UnreadableFile as error:
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


def summary(result: Result) -> str:
    """One line for the terminal, in mmseg's x100 convention."""
    parts = [f"{name} {100 * result.metrics[name].value:.2f}" for name in ("mIoU", "aAcc", "mAcc", "devkit_mIoU")
             if name in result.metrics and result.metrics[name].value is not None]
    return ", ".join(parts) + f" ({result.coverage.used}/{result.coverage.expected} images)"

