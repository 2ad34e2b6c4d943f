"""The UCF-101 recipe (paper §4): fine-tune a video classifier on a split's training videos, test it on its test videos.

Training: Adam, lr 1e-4 (``--lr``), ×0.1 after epochs 6, 10 and 14 of 16 (``--epochs``), batches of 8 clips, one
random clip of every video per epoch; ``--mode frozen`` trains only the temporal head and the classifier. Test:
the mean softmax over each video's ``--test-clips`` clips (10), top-1 and top-5.

Training runs in the shared fine-tune loop (``vito.engine.finetune``: the run folder ``OUT/runs/split{N}/`` and
its lock, stop signals, checkpoints of format ``vito-ucf101/1``, ``--resume``, reuse of a finished run with the
same settings, torchrun DDP, bf16 autocast on CUDA, the non-finite check, ``metrics.jsonl``, TensorBoard). The loop
counts steps, so epochs are converted: an epoch is ``videos / batch`` steps of the endless stream of per-epoch
permutations (``ucf101_data.TrainingClips``), and the run length and the lr milestones are epochs × that, rounded.
Every step is logged, so the Result's per-epoch loss (the mean over an epoch's steps) is read back from
``metrics.jsonl``, the same for a run resumed or reused as for one never stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from vito.engine import distributed
from vito.engine.finetune import FinetuneResult, FinetuneSpec, finetune, make_loader
from vito.engine.progress import progress
from vito.engine.run_files import METRICS_FILE
from vito.errors import DataError
from vito.eval.core.encoder_spec import inference_mode
from vito.eval.core.encoders import Encoder
from vito.eval.core.inputs import collate_readable
from vito.eval.video.temporal_heads import VideoClassifier
from vito.eval.video.ucf101_data import CLIP_FPS, CLIP_SECONDS, TrainingClips, UCF101Clips

if TYPE_CHECKING:  # the Settings of the evaluation, which imports this module
    from vito.eval.video.ucf101 import UCF101Settings

CHECKPOINT_FORMAT = "vito-ucf101/1"
MILESTONES = (6, 10, 14)  # epochs after which the learning rate is multiplied by LR_DROP
LR_DROP = 0.1


@dataclass(frozen=True)
class Schedule:
    """The recipe's epochs in steps: how many steps, the steps from which the lr drops, where epochs end."""

    lr: float
    epochs: int
    steps_per_epoch: float  # videos / batch
    steps: int
    drops: tuple[int, ...]

    @classmethod
    def of(cls, videos: int, settings: UCF101Settings) -> Schedule:
        per_epoch = videos / settings.batch_size
        return cls(settings.lr, settings.epochs, per_epoch, max(1, round(settings.epochs * per_epoch)),
                   tuple(round(m * per_epoch) for m in MILESTONES))

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        return self.lr * LR_DROP ** sum(step >= drop for drop in self.drops)

    def epoch_end(self, epoch: int) -> int:
        """Steps done when epoch ``epoch`` (0-based) ends."""
        return self.steps if epoch + 1 == self.epochs else min(self.steps, round((epoch + 1) * self.steps_per_epoch))


def run_config(encoder: Encoder, settings: UCF101Settings, split: int, videos: int, classes: int) -> dict[str, Any]:
    """Everything that decides what a fine-tune learns: its identity in the run folder (test clips, workers and
    checkpointing may change; the run is then reused or continued)."""
    return {
        "evaluation": "ucf101", "root": str(Path(settings.root).resolve()),
        "splits": str(Path(settings.splits).resolve()), "split": split, "videos": videos, "num_classes": classes,
        "encoder": encoder.fingerprint, "encoder_name": encoder.name, "pooling": settings.pooling,
        "mode": settings.mode, "epochs": settings.epochs, "lr": settings.lr, "milestones": list(MILESTONES),
        "batch_size": settings.batch_size, "image_size": settings.image_size, "clip_seconds": CLIP_SECONDS,
        "fps": CLIP_FPS, "max_videos": settings.max_videos, "seed": settings.seed,
    }


def clip_loss(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Cross-entropy of the clips' logits (one clip per video)."""
    return {"loss": F.cross_entropy(model(batch["clips"]).float(), batch["labels"])}


def finetune_classifier(model: VideoClassifier, videos: UCF101Clips, settings: UCF101Settings, run_dir: Path,
                        config: dict[str, Any], precision: str,
                        context: distributed.Context) -> tuple[FinetuneResult, Schedule]:
    """Train ``model`` on ``videos`` in ``run_dir`` with the shared fine-tune loop (or reuse / continue the run
    there); a stop signal raises ``FinetuneStopped`` after the checkpoint."""
    schedule = Schedule.of(len(videos), settings)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)

    def batches(start: int):
        return make_loader(TrainingClips(videos, settings.batch_size, settings.seed, start, context.rank,
                                         context.world_size), settings.num_workers)

    spec = FinetuneSpec(format=CHECKPOINT_FORMAT, iterations=schedule.steps, config={**config, "steps": schedule.steps},
                        checkpoint_every=settings.checkpoint_every, log_every=1, precision=precision,
                        description=f"UCF-101 split {config['split']}")
    result = finetune(model, clip_loss, optimizer, schedule.lr_at, batches, run_dir, spec, context,
                      resume=settings.resume, overwrite=settings.overwrite)
    result.raise_if_stopped()
    result.skipped = sorted(dict(distributed.gather_objects(result.skipped)).items())  # one entry per video
    return result, schedule


def epoch_history(run_dir: Path, schedule: Schedule) -> list[dict[str, Any]]:
    """Per epoch: the mean loss of its steps (from ``metrics.jsonl``) and the learning rate after it."""
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    losses = {record["step"]: record["loss"] for record in map(json.loads, filter(str.strip, lines))}
    rows, start = [], 0
    for epoch in range(schedule.epochs):
        end = schedule.epoch_end(epoch)
        steps = [losses[step] for step in range(start + 1, end + 1) if step in losses]
        if steps:
            rows.append({"epoch": epoch + 1, "loss": float(np.mean(steps)), "lr": schedule.lr_at(end)})
        start = end
    return rows


@torch.no_grad()
def score_classifier(model: VideoClassifier, videos: UCF101Clips, settings: UCF101Settings, precision: str,
                    context: distributed.Context) -> dict[str, Any]:
    """Top-1/top-5 of the mean softmax over each video's test clips; each process tests its share of the videos."""
    model.eval()
    share = Subset(videos, range(context.rank, len(videos), context.world_size))
    loader = DataLoader(share, batch_size=max(1, settings.batch_size // 4), shuffle=False,
                        num_workers=distributed.worker_count(settings.num_workers), collate_fn=collate_readable)
    scored, skipped = [], []
    with inference_mode(context.device, precision):
        for clips, labels, bad in progress(loader, desc="UCF-101 test", unit="batch", enabled=context.is_main):
            skipped += bad
            if clips is None:
                continue
            batch, num_clips = clips.shape[:2]
            logits = model(clips.flatten(0, 1).to(context.device)).float()
            scored.append((logits.softmax(dim=1).view(batch, num_clips, -1).mean(dim=1).cpu(), labels))
    scored, skipped = distributed.gather_objects(scored), distributed.gather_objects(skipped)
    if not scored:
        raise DataError("no test video could be read")
    probs, labels = torch.cat([p for p, _ in scored]), torch.cat([y for _, y in scored])
    top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
    return {"top1": (top5[:, 0] == labels).float().mean().item(),
            "top5": (top5 == labels[:, None]).any(dim=1).float().mean().item(),
            "videos": len(labels), "skipped_videos": skipped}
