"""Where a segmentation fine-tune's learning rate is chosen: on images held out of the training split.

Why: a learning rate picked on the split the number is reported on makes every reported number optimistic.
BYOL, whose PASCAL VOC protocol vito follows (docs/segmentation.md), selects its hyperparameters on 2,119 images
held out of ``train_aug`` (10,582 images) and publishes no list of them. vito draws its own: a seeded random
2,119 of the training split's images, never one of the evaluation split (a ``train_aug`` that shares ids with
``val`` would otherwise choose on val again); a smaller training split gives up the same fraction
(2,119 / 10,582, about 20 %), at least one image. Each lr of the sweep is fine-tuned on the rest and scored on
the held-out images; the chosen lr is then fine-tuned on the whole training split for every seed and reported
on the evaluation split. ``--lr-selection val`` chooses on the evaluation split itself (labelled so in the
Result), as vito did before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from vito.errors import DataError
from vito.eval.dense.segmentation.data import SegmentationDataset

HELDOUT_IMAGES = 2119  # BYOL: held out of train_aug for hyperparameter selection
TRAIN_AUG_IMAGES = 10_582  # PASCAL VOC 2012 train + SBD, without val
HELDOUT_SPLIT = "heldout"


def heldout_count(candidates: int) -> int:
    """2,119 of a full ``train_aug``; of fewer images the same fraction, rounded, at least 1."""
    return min(HELDOUT_IMAGES, max(1, round(candidates * HELDOUT_IMAGES / TRAIN_AUG_IMAGES)))


@dataclass(frozen=True)
class HeldOut:
    """The training split cut in two: ``fit`` (fine-tuned on) and ``heldout`` (each lr scored on), by ``seed``."""

    fit: SegmentationDataset
    heldout: SegmentationDataset
    seed: int

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.heldout.items]

    def identity(self) -> dict[str, Any]:
        """What makes a selection fine-tune this one: the seed, the count and a digest of the held-out ids."""
        digest = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {"seed": self.seed, "images": len(self.ids), "ids_sha256": digest}


def hold_out(train: SegmentationDataset, evaluation: SegmentationDataset, seed: int) -> HeldOut:
    """Draw the held-out images of ``train`` (in split order) with ``numpy.random.default_rng(seed)`` among the
    training images whose ids are not in ``evaluation``; the rest of ``train`` is the fit split."""
    excluded = {item.id for item in evaluation.items}
    candidates = [item for item in train.items if item.id not in excluded]
    if not candidates:
        raise DataError(f"every image of {train.name} {train.split} is also in {evaluation.split}: none can be held "
                        "out to choose the learning rate on (use --lr-selection val, or a training split without "
                        f"the {evaluation.split} images)")
    count = heldout_count(len(candidates))
    chosen = set(np.random.default_rng(seed).choice(len(candidates), size=count, replace=False).tolist())
    held = tuple(item for i, item in enumerate(candidates) if i in chosen)
    held_ids = {item.id for item in held}
    fit = tuple(item for item in train.items if item.id not in held_ids)
    if not fit:
        raise DataError(f"{train.name} {train.split} has {len(train.items)} image(s): holding out {count} leaves none "
                        "to fine-tune on (use --lr-selection val)")
    return HeldOut(dataclasses.replace(train, split=f"{train.split} without {HELDOUT_SPLIT}", items=fit),
                   dataclasses.replace(train, split=HELDOUT_SPLIT, items=held), seed)
