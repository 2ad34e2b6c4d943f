"""ImageNet classifiers on frozen encoders, and their logits on image files.

Every robustness and alignment evaluation (ImageNet-A, Vid-Robust, 3DCC, model-vs-human, gradient saliency on
ClickMe) reads its 1000 logits from ``ImageNetClassifier``, so VITO and the baselines are scored through the
same path: a linear head from ``vito eval linear`` on the encoder's embedding, or the encoder's own head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from vito.engine.distributed import worker_count
from vito.engine.progress import progress
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import EvalTransform, ImageFiles, collate_readable
from vito.eval.probes.heads import load_linear_head

log = logging.getLogger(__name__)

CLASSIFIER_HELP = "ImageNet head: `own` (the encoder's own classifier) or a linear head file from `vito eval linear`"


class ImageNetClassifier(nn.Module):
    """Frozen encoder → 1000 ImageNet logits, through a linear head on its embedding or, without one, through
    the encoder's own architecture end to end (many architectures normalise or project the pooled features
    before their classifier, so the own-head path runs the whole model rather than its last layer on ``embed``).
    """

    def __init__(self, encoder: Encoder, head: nn.Module | None = None) -> None:
        super().__init__()
        if head is None and getattr(encoder, "classifier", None) is None:
            raise VitoError(f"{encoder.name} has no ImageNet head of its own: pass --classifier HEAD_FILE "
                            "(a linear head from `vito eval linear`)")
        self.encoder = encoder
        self.head = head
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.encoder.model(images)
        return self.head(self.encoder.embed(images))


def attach_head(encoder: Encoder, head: str | Path | None) -> ImageNetClassifier:
    """The encoder with its own head (``None`` or ``own``) or a saved linear head that fits its features."""
    if head is None or str(head) == "own":
        return ImageNetClassifier(encoder)
    linear = load_linear_head(head)
    if linear.out_features != 1000 or linear.in_features != encoder.feature_dim:
        raise VitoError(f"{head}: a {linear.in_features}→{linear.out_features} head does not map this encoder's "
                        f"{encoder.feature_dim}-d features to the 1000 ImageNet classes")
    classes = list(getattr(linear, "meta", {}).get("classes", []))
    if classes and classes != imagenet_synsets():
        log.warning("%s was trained on class folders that are not the ImageNet-1k wnids (%s, ...); its outputs "
                    "are read in ImageNet index order", head, ", ".join(classes[:3]))
    return ImageNetClassifier(encoder, linear)


def timm_info(name: str) -> list[str]:
    """Lines of one of timm's ImageNet info files (no download: they ship with the package)."""
    text = resources.files("timm.data._info").joinpath(name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    return timm_info("imagenet_synsets.txt")


@dataclass
class InferenceSettings:
    """How a classifier is run over images (shared by the robustness and alignment evaluations)."""

    classifier: str = field(default="own", metadata={"help": CLASSIFIER_HELP})
    image_size: int = field(default=224, metadata={"help": "evaluation resolution"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    num_workers: int = field(default=0, metadata={"help": "image-decoding worker processes"})

    def predict_kwargs(self) -> dict:
        return {"image_size": self.image_size, "batch_size": self.batch_size, "num_workers": self.num_workers}


@dataclass
class Logits:
    """Logits of the readable images: ``logits[i]`` belongs to ``paths[kept[i]]``; the rest are ``skipped``."""

    logits: torch.Tensor  # [N_kept, C]
    kept: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict_logits(
    classifier: ImageNetClassifier,
    paths: Sequence[Path],
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "classifying",
) -> Logits:
    """Logits of ``classifier`` on the image files, in order; unreadable files are skipped and listed."""
    encoder = classifier.encoder
    device = next(classifier.parameters(), torch.empty(0)).device
    files = ImageFiles(paths, list(range(len(paths))), EvalTransform(image_size))
    loader = DataLoader(files, batch_size=batch_size, num_workers=worker_count(num_workers),
                        collate_fn=collate_readable)
    classifier = classifier.to(device).eval()
    outputs, kept, skipped = [], [], []
    with inference_mode(device, getattr(encoder, "precision", "auto")):
        for batch, indices, bad in progress(loader, desc=desc, unit="batch", leave=False):
            skipped += bad
            if batch is not None:
                outputs.append(classifier(batch.to(device)).float().cpu())
                kept += indices.tolist()
    if not outputs:
        raise DataError(f"none of the {len(paths)} images could be read ({desc}): e.g. {skipped[:3]}")
    return Logits(torch.cat(outputs), kept, skipped)
