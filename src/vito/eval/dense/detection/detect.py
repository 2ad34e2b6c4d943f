"""``vito eval detect``: COCO / LVIS object detection (docs/detection.md, paper A.3).

Two modes that share the metrics (``vito.eval.dense.detection.metrics``, faster-coco-eval underneath):

* scoring only — ``--predictions RESULTS.json``: any method's detections in the COCO results format
  (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, plus ``"segmentation"`` RLE for
  ``--iou-type segm``) scored against ``--val-ann``;
* fine-tuning — ``--encoder ENC --images DIR --train-ann FILE``: the paper's FCOS* (``--head fcos``: plain
  FCOS) with an FPN on the encoder, trained on the train annotations and scored on the val annotations.

The Result holds the 12 COCO summary numbers (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) or, for LVIS,
AP, AP50, AP75, APs/m/l, APr/APc/APf and AR300, ARs/m/l (300 detections per image), every one unrounded;
an undefined number (COCOeval's -1) is null.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vito.engine import distributed
from vito.errors import VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result, mean_and_sd
from vito.eval.dense.detection.data import Annotations, load_annotations
from vito.eval.dense.detection.metrics import DetectionScores, load_results, metric_labels, score_detections
from vito.eval.dense.detection.settings import DetectSettings

if TYPE_CHECKING:
    from vito.eval.dense.detection.recipe import SeedOutcome


@register
class Detect(Evaluation):
    name = "detect"
    Settings = DetectSettings
    needs_encoder = "optional"
    group = "dense"
    headline = "AP"  # AP @[IoU=0.50:0.95] (COCO: 100, LVIS: 300 detections per image), Table B.3
    help = "COCO / LVIS object detection: score a results file, or fine-tune FCOS* (or FCOS) on the encoder"
    description = __doc__

    def check(self, settings: DetectSettings, has_encoder: bool) -> None:
        if settings.predictions is None and not has_encoder:
            raise VitoError("vito eval detect needs --predictions RESULTS.json (scoring only) or --encoder ENC "
                            "(fine-tuning)")
        if settings.predictions is not None and has_encoder:
            raise VitoError("give either --predictions (scoring only) or --encoder (fine-tuning), not both")
        if has_encoder:
            missing = [flag for flag, value in (("--images", settings.images), ("--train-ann", settings.train_ann))
                       if value is None]
            if missing:
                raise VitoError(f"fine-tuning a detector needs {' and '.join(missing)}")
            if settings.iou_type != "bbox":
                raise VitoError("the detector fine-tune predicts boxes: --iou-type segm is for scoring results files")
            if not settings.seeds or len(settings.resolution) != 2 or min(settings.resolution) < 32:
                raise VitoError("--seeds needs at least one seed and --resolution two sides of at least 32 pixels")
            if settings.fpn_channels < 32 or settings.fpn_channels % 32:
                raise VitoError(f"--fpn-channels must be a multiple of 32 (GroupNorm), got {settings.fpn_channels}")

    def run(self, encoder: Encoder | None, settings: DetectSettings, out_dir: Path) -> Result:
        annotations = load_annotations(settings.val_ann, settings.dataset)
        if encoder is not None:
            return self._finetune(encoder, settings, annotations, out_dir)
        results = load_results(settings.predictions, annotations, settings.iou_type)
        scores = score_detections(annotations, results, settings.iou_type)
        return detection_result(self.name, annotations, scores, settings.iou_type)

    def _finetune(self, encoder: Encoder, settings: DetectSettings, val: Annotations, out_dir: Path) -> Result:
        # the recipe builds torchvision's FCOS: kept out of `vito eval --help`, which imports this module
        from vito.eval.dense.detection.recipe import finetune_plan, finetune_seed

        train = load_annotations(settings.train_ann, settings.dataset)
        if train.category_ids != val.category_ids:
            raise VitoError(f"{settings.train_ann} and {settings.val_ann} have different categories")
        context = distributed.setup(next(encoder.parameters()).device.type)
        outcomes = []
        for seed in settings.seeds:
            plan = finetune_plan(settings, train, seed, encoder)
            outcomes.append(finetune_seed(encoder, train, val, settings.images, plan, Path(out_dir) / f"seed_{seed}",
                                          settings.resume, settings.overwrite, context))
        return finetune_result(self.name, val, outcomes, Path(out_dir))


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


def finetune_result(name: str, val: Annotations, outcomes: list[SeedOutcome], out_dir: Path) -> Result:
    """Mean and sd over seeds of every metric; per-seed numbers in a table; the first seed's pictures."""
    labels = metric_labels(val.dataset)
    metrics: dict[str, Metric] = {}
    for key, label in labels.items():
        mean, sd = mean_and_sd([o.scores.metrics[key] for o in outcomes])
        seeds = f"{len(outcomes)} seed{'s' if len(outcomes) != 1 else ''}"  # never "1 seeds"
        metrics[key] = Metric(mean, "proportion", f"bbox {label}, mean over {seeds}")
        metrics[f"{key}_sd"] = Metric(sd, "value", f"sd of {key} over seeds")
    per_seed = [{"seed": o.run_dir.name.removeprefix("seed_"), **o.scores.metrics, "final_loss": o.final_loss,
                 "reused": o.reused} for o in outcomes]
    skipped = sorted({item for o in outcomes for item in o.skipped})
    scored = min(o.scored_images for o in outcomes)
    coverage = Coverage(scored, len(val.images), f"val images predicted and scored (of {len(val.images)})")
    pictures = [str(p.relative_to(out_dir)) for p in outcomes[0].pictures]
    artifacts = {f"detections seed {o.run_dir.name.removeprefix('seed_')}":
                 str((o.run_dir / "detections.json").relative_to(out_dir)) for o in outcomes}
    coverage.training_skipped = max(o.training_skipped for o in outcomes)
    return Result(name, metrics, {"seeds_run": len(outcomes)}, coverage, tables={"per seed": per_seed},
                  pictures=pictures, skipped=skipped, artifacts=artifacts)
