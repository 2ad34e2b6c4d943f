"""``vito eval clickme``: alignment of a model's saliency with ClickMe human maps (docs/metrics.md, paper §4.2
and A.8), as the mean Spearman over images divided by the human ceiling (``saliency``); with ``--compare``,
the paper's Fig. 3 beside earlier runs (``pictures``)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.core.classifier import CLASSIFIER_HELP, attach_head
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result
from vito.eval.human.clickme_data import EXAMPLES, iter_clickme, save_examples
from vito.eval.human.saliency import (
    HUMAN_SPEARMAN_CEILING,
    MAP_SIZE,
    alignment_score,
    attention_saliency,
    gradient_saliency,
    has_attention,
    spearman_per_image,
    top_fraction_overlap,
)

log = logging.getLogger(__name__)

PICTURE = "clickme_overlays.png"


def evaluate_clickme(
    encoder: nn.Module,
    root: str | Path,
    classifier: nn.Module | None = None,
    method: str = "auto",
    batch_size: int = 64,
    image_size: int = MAP_SIZE,
    keep_examples: int = 8,
    device: str | torch.device | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Alignment score of ``encoder``'s saliency with ClickMe; returns (results, example maps for pictures).

    ``method``: ``attention`` (VITO), ``gradient`` (needs ``classifier``) or ``auto`` (attention when the
    encoder has attention pooling, else gradient).
    """
    device = device if device is not None else next(encoder.parameters(), torch.empty(0)).device
    encoder = encoder.to(device).eval()
    spearman, dice, iou = [], [], []
    examples: dict[str, list[np.ndarray]] = {"pixels": [], "human": [], "model": [], "names": []}
    for batch in progress(iter_clickme(root, batch_size, image_size), desc="clickme", unit="batch", leave=False):
        images = batch.images.to(device)
        if method == "auto":
            method = "attention" if has_attention(encoder, images) else "gradient"
        if method == "attention":
            maps = attention_saliency(encoder, images)
        elif classifier is None:
            raise VitoError("gradient saliency needs an ImageNet classifier (--classifier HEAD or own)")
        else:
            maps = gradient_saliency(classifier.to(device).eval(), images, batch.labels)
        maps = maps.cpu().numpy()
        spearman.append(spearman_per_image(maps, batch.human_maps.numpy()))
        overlap = top_fraction_overlap(maps, batch.human_maps.numpy())
        dice.append(overlap["dice"])
        iou.append(overlap["iou"])
        room = keep_examples - len(examples["names"])
        if room > 0:
            examples["pixels"] += list(batch.pixels[:room].numpy())
            examples["human"] += list(batch.human_maps[:room].numpy())
            examples["model"] += list(maps[:room])
            examples["names"] += batch.names[:room]
    rho = np.concatenate(spearman)
    flat = int(np.isnan(rho).sum())
    if flat:
        log.warning("ClickMe: %d images with a constant map (undefined Spearman) left out", flat)
    results = {
        "benchmark": "clickme",
        "saliency": method,
        "images": int(rho.size),
        "undefined_spearman": flat,
        "spearman_mean": float(np.nanmean(rho)) if rho.size > flat else math.nan,
        "alignment": alignment_score(rho),
        "human_ceiling": HUMAN_SPEARMAN_CEILING,
        "dice_top10": float(np.concatenate(dice).mean()),
        "iou_top10": float(np.concatenate(iou).mean()),
    }
    return results, {key: np.stack(value) if key != "names" else np.array(value) for key, value in examples.items()}


@dataclass
class ClickMeSettings:
    root: Path | None = field(default=None, metadata={"help": "folder of ClickMe .npz files (`vito docs datasets`)"})
    classifier: str | None = field(default=None, metadata={"help": CLASSIFIER_HELP + " (needed for gradient "
                                                                                     "saliency)"})
    saliency: Literal["auto", "attention", "gradient"] = field(default="auto", metadata={
        "help": "auto: attention for encoders with attention pooling, else gradient"})
    image_size: int = field(default=MAP_SIZE, metadata={"help": "evaluation resolution"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "earlier clickme output folders to draw beside", "cli": {"nargs": "*"}})


@register
class ClickMe(Evaluation):
    name = "clickme"
    Settings = ClickMeSettings
    needs_encoder = "optional"  # without one: only the overlays of --compare runs
    uses_classifier = True
    group = "human"
    headline = "alignment"  # mean Spearman / human ceiling: the paper's Table 2 figure
    help = "alignment of saliency with ClickMe human maps (normalised Spearman)"
    description = ("VITO encoders use their attention maps; others gradient saliency of a classifier. "
                   "See docs/datasets.md for the expected data layout.")

    def check(self, settings: ClickMeSettings, has_encoder: bool) -> None:
        if not has_encoder and not settings.compare:
            raise VitoError("vito eval clickme: give --encoder ENC, or --compare RUN_DIRS... to draw overlays only")
        if has_encoder and settings.root is None:
            raise VitoError("vito eval clickme: --root DIR (ClickMe .npz files) is required")
        missing = [str(f) for f in settings.compare if not (Path(f) / EXAMPLES).is_file()]
        if missing:  # before the evaluation, not after it
            raise DataError(f"no ClickMe examples to compare with in {', '.join(missing)}")

    def run(self, encoder: Encoder | None, settings: ClickMeSettings, out_dir: Path) -> Result:
        from vito.eval.human.pictures import compare_clickme  # matplotlib: kept out of `vito eval --help`

        out_dir = Path(out_dir)
        if encoder is None:
            compare_clickme(settings.compare, out_dir / PICTURE)
            count = len(settings.compare)
            return Result(self.name, {}, {"mode": "compare"}, Coverage(count, count, "earlier runs drawn"),
                          pictures=[PICTURE])
        head = attach_head(encoder, settings.classifier) if settings.classifier is not None else None
        scores, examples = evaluate_clickme(encoder, settings.root, head, method=settings.saliency,
                                            batch_size=settings.batch_size, image_size=settings.image_size)
        save_examples(out_dir, examples, encoder.name)
        compare_clickme([out_dir, *settings.compare], out_dir / PICTURE)
        metrics = {"alignment": Metric(scores["alignment"], "value", "alignment (Spearman / human ceiling)"),
                   "spearman_mean": Metric(scores["spearman_mean"], "signed", "mean Spearman"),
                   "dice_top10": Metric(scores["dice_top10"], "proportion", "Dice of the top 10 %"),
                   "iou_top10": Metric(scores["iou_top10"], "proportion", "IoU of the top 10 %")}
        defined = scores["images"] - scores["undefined_spearman"]
        coverage = Coverage(defined, scores["images"], "images with a defined Spearman (a flat map has none)")
        return Result(self.name, metrics,
                      {"saliency_used": scores["saliency"], "human_ceiling": HUMAN_SPEARMAN_CEILING},
                      coverage, pictures=[PICTURE], artifacts={"examples": EXAMPLES})
