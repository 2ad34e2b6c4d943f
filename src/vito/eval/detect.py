"""``vito eval detect``: COCO / LVIS object detection (spec §12, paper A.3).

Two modes that share the metrics (``vito.eval.detection_metrics``, faster-coco-eval underneath):

* scoring only — ``--predictions RESULTS.json``: any method's detections in the COCO results format
  (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, plus ``"segmentation"`` RLE for
  ``--iou-type segm``) scored against ``--val-ann``;
* fine-tuning — ``--encoder ENC --images DIR --train-ann FILE``: FCOS with an FPN on the encoder, trained on
  the train annotations and scored on the val annotations.

The Result holds the 12 COCO summary numbers (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) or, for LVIS,
AP, AP50, AP75, APs/m/l, APr/APc/APf and AR300, ARs/m/l (300 detections per image), every one unrounded;
an undefined number (COCOeval's -1) is null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vito.errors import VitoError
from vito.eval.base import Coverage, Evaluation, Metric, Result, register
from vito.eval.detection_data import Annotations, load_annotations
from vito.eval.detection_metrics import DetectionScores, load_results, metric_labels, score_detections
from vito.eval.encoders import Encoder


@dataclass
class DetectSettings:
    dataset: Literal["coco", "lvis"] = field(metadata={"help": "coco (12 COCO numbers) or lvis (AP, APr/APc/APf; "
                                                                "300 detections per image)"})
    val_ann: Path = field(metadata={"help": "val instances JSON (COCO val2017 or LVIS v1_val / v0.5 val)"})
    predictions: Path | None = field(default=None, metadata={
        "help": "score this COCO results JSON instead of fine-tuning an encoder"})
    iou_type: Literal["bbox", "segm"] = field(default="bbox", metadata={
        "help": "bbox, or segm for results that carry RLE masks (scoring only)"})


@register
class Detect(Evaluation):
    name = "detect"
    Settings = DetectSettings
    needs_encoder = "optional"
    group = "dense"
    help = "COCO / LVIS object detection: score a results file, or fine-tune FCOS on the encoder"
    description = __doc__

    def check(self, settings: DetectSettings, has_encoder: bool) -> None:
        if settings.predictions is None and not has_encoder:
            raise VitoError("vito eval detect needs --predictions RESULTS.json (scoring only) or --encoder ENC "
                            "(fine-tuning)")
        if settings.predictions is not None and has_encoder:
            raise VitoError("give either --predictions (scoring only) or --encoder (fine-tuning), not both")

    def run(self, encoder: Encoder | None, settings: DetectSettings, out_dir: Path) -> Result:
        annotations = load_annotations(settings.val_ann, settings.dataset)
        results = load_results(settings.predictions, annotations, settings.iou_type)
        scores = score_detections(annotations, results, settings.iou_type)
        return detection_result(self.name, annotations, scores, settings.iou_type)


def detection_result(name: str, annotations: Annotations, scores: DetectionScores, iou_type: str) -> Result:
    """The Result of one scored detections list: metrics, per-category AP, coverage of the val images."""
    labels = metric_labels(annotations.dataset)
    metrics = {key: Metric(scores.metrics[key], "proportion", f"{iou_type} {label}") for key, label in labels.items()}
    images = len(annotations.images)
    note = f"{scores.num_detections} detections on {scores.images_with_detections} of {images} val images"
    if scores.dropped_by_cap:
        note += f"; {scores.dropped_by_cap} detections beyond the 300 best of their image not scored (LVIS rule)"
    settings = {"num_detections": scores.num_detections, "dropped_by_cap": scores.dropped_by_cap}
    return Result(name, metrics, settings, Coverage(images, images, note),
                  tables={"AP per category": scores.per_category})
