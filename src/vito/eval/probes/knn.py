"""`vito eval knn`: weighted kNN classification on frozen features (DINO protocol, docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vito.errors import VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.features import FeatureSet, cached_features
from vito.eval.core.registry import Evaluation, register
from vito.eval.core.result import Coverage, Metric, Result
from vito.eval.probes.heads import topk_accuracy

DINO_KS = (10, 20, 100, 200)  # the k values DINO reports
HEADLINE_K = 20  # DINO's headline number


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """``[N_test, C]`` class scores: the k most cosine-similar training points vote with ``exp(sim / T)``.

    Scores are normalised to sum to one per test point (the argmax is DINO's prediction).
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test.shape[0], chunk):
        similarity = test[start : start + chunk] @ train.T
        top_sim, top_idx = similarity.topk(k, dim=1)
        votes = torch.zeros(top_sim.shape[0], num_classes)
        # subtracting the row maximum leaves the normalised scores unchanged and avoids overflow
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
        votes.scatter_add_(1, train_labels[top_idx].long(), weights)
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores)


@dataclass
class ImageFolderPair:
    """Two ImageFolders with the same classes and how to read them (shared by kNN and the linear probe)."""

    train: Path = field(metadata={"help": "ImageFolder of training images (root/<class>/<img>)"})
    val: Path = field(metadata={"help": "ImageFolder of validation images, same classes"})
    image_size: int = field(default=224, metadata={"help": "side after the 224/256 centre crop"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    num_workers: int = field(default=4, metadata={"help": "image-decoding worker processes"})
    cache_dir: Path | None = field(default=None, metadata={"help": "feature cache (default: OUT/features)"})


def feature_pair(encoder: Encoder, settings: ImageFolderPair, out_dir: Path) -> tuple[FeatureSet, FeatureSet]:
    """Cached features of train and val; different class folders are a user error."""
    cache = settings.cache_dir if settings.cache_dir is not None else Path(out_dir) / "features"
    kwargs = {"image_size": settings.image_size, "batch_size": settings.batch_size,
              "num_workers": settings.num_workers}
    train = cached_features(encoder, settings.train, cache, **kwargs)
    val = cached_features(encoder, settings.val, cache, **kwargs)
    if train.classes != val.classes:
        raise VitoError(f"{settings.train} and {settings.val} have different class folders")
    return train, val


def image_coverage(train: FeatureSet, val: FeatureSet) -> tuple[Coverage, list[tuple[str, str]]]:
    """Readable images of train + val out of all listed, and the skipped ones with their reasons."""
    skipped = [*train.skipped, *val.skipped]
    used = len(train.paths) + len(val.paths)
    note = f"{len(train.paths)} train + {len(val.paths)} val images, {len(train.classes)} classes"
    return Coverage(used, used + len(skipped), note), skipped


@dataclass
class KnnSettings(ImageFolderPair):
    k: list[int] = field(default_factory=lambda: list(DINO_KS),
                         metadata={"help": "neighbours; several values are all reported (DINO: 10 20 100 200)"})
    temperature: float = field(default=0.07, metadata={"help": "vote weight exp(sim / T)"})


@register
class Knn(Evaluation):
    name = "knn"
    Settings = KnnSettings
    group = "scene"
    headline = "top1"  # top-1 at the headline k (20, DINO's)
    help = "weighted kNN classification on frozen features (DINO protocol)"

    def run(self, encoder: Encoder, settings: KnnSettings, out_dir: Path) -> Result:
        if not settings.k or min(settings.k) < 1:
            raise VitoError(f"--k needs positive neighbour counts, got {settings.k}")
        train, val = feature_pair(encoder, settings, out_dir)
        metrics, rows, clipped = {}, [], {}
        for k in settings.k:
            used = min(k, len(train.paths))  # knn_scores takes at most every training image
            scores = knn_scores(train.features, train.labels, val.features, len(train.classes), k,
                                settings.temperature)
            accuracy = topk_accuracy(scores, val.labels)
            rows.append({"k": k, "neighbours used": used, **accuracy})
            label = f"k={k}" if used == k else f"k={k}, clipped to {used}"
            if used < k:
                clipped[str(k)] = used
            for name, value in accuracy.items():
                metrics[f"{name}_k{k}"] = Metric(value, "proportion", f"{name.replace('top', 'top-')} ({label})")
        headline = HEADLINE_K if HEADLINE_K in settings.k else settings.k[0]
        metrics = {"top1": metrics[f"top1_k{headline}"], **metrics}
        coverage, skipped = image_coverage(train, val)
        if clipped:  # every larger k votes with the same neighbours: say so, next to the numbers it shaped
            coverage.note += (f"; k={', '.join(clipped)} clipped to the {len(train.paths)} training images")
        recorded = {"headline_k": headline, **({"k_clipped_to": clipped} if clipped else {})}
        return Result(self.name, metrics, recorded, coverage, tables={"accuracy per k": rows}, skipped=skipped)
