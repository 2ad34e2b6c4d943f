"""The settings of ``vito eval detect`` (paper A.3's preset): one dataclass, which the fine-tune recipe reads too.

The preset's numbers live here, not in the modules that use them (``model``, ``transforms``), so that building
``vito eval detect --help`` imports no torchvision detection code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vito.engine.loggers import LoggerSettings

REFERENCE_BATCH = 128  # the batch at which A.3's base learning rate is stated
TARGET_RESOLUTION = (800, 1024)  # (height, width), paper A.3
FPN_CHANNELS = 256  # the width of the FPN and the FCOS head, as in torchvision's fcos_resnet50_fpn


@dataclass
class DetectSettings(LoggerSettings):
    dataset: Literal["coco", "lvis"] = field(metadata={"help": "coco (12 COCO numbers) or lvis (AP, APr/APc/APf; "
                                                                "300 detections per image)"})
    val_ann: Path = field(metadata={"help": "val instances JSON (COCO val2017 or LVIS v1_val / v0.5 val)"})
    predictions: Path | None = field(default=None, metadata={
        "help": "score this COCO results JSON instead of fine-tuning an encoder"})
    iou_type: Literal["bbox", "segm"] = field(default="bbox", metadata={
        "help": "bbox, or segm for results that carry RLE masks (scoring only)"})
    # fine-tuning (paper A.3 preset)
    images: Path | None = field(default=None, metadata={
        "help": "image folder holding the train and val images ({id:012d}.jpg, or the JSON's file_name)"})
    train_ann: Path | None = field(default=None, metadata={"help": "train instances JSON (fine-tuning)"})
    epochs: float = field(default=30.0, metadata={"help": "fine-tuning epochs"})
    max_steps: int | None = field(default=None, metadata={
        "help": "stop the schedule after this many steps (quick runs; the schedule keeps its epoch fractions)"})
    batch_size: int = field(default=REFERENCE_BATCH, metadata={"help": "global batch (split over processes)"})
    base_lr: float = field(default=1e-3, metadata={
        "help": f"AdamW learning rate at batch {REFERENCE_BATCH}, scaled linearly with --batch-size"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=0.25, metadata={"help": "linear learning-rate warm-up"})
    resolution: tuple[int, ...] = field(default=TARGET_RESOLUTION, metadata={
        "help": "target resolution HEIGHT WIDTH (fit and pad at test; scale jitter, crop/pad at train)",
        "cli": {"nargs": 2, "metavar": "N"}})
    flip: bool = field(default=True, metadata={"help": "no horizontal flips at train",
                                               "cli": {"flag": "--no-flip", "invert": True}})
    head: Literal["fcos-star", "fcos"] = field(default="fcos-star", metadata={
        "help": "fcos-star: the paper's FCOS* (TOOD's task-aligned head and assignment after ATSS, an IoU "
                "branch; `vito docs detection`); fcos: plain torchvision FCOS"})
    fpn_channels: int = field(default=FPN_CHANNELS, metadata={
        "help": "width of the FPN and the detection head (256 in FCOS; smaller only for quick runs)"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4], metadata={
        "help": "one fine-tune per seed; the Result gives the mean and sd over them"})
    num_workers: int = field(default=4, metadata={"help": "image-decoding worker processes"})
    eval_batch_size: int = field(default=4, metadata={"help": "val images per forward pass (per process)"})
    pictures: int = field(default=4, metadata={"help": "val images drawn with predictions next to ground truth"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints"})
    log_every: int = field(default=20, metadata={"help": "steps between metrics.jsonl/TensorBoard records"})
    resume: bool = field(default=False, metadata={"help": "continue stopped fine-tunes in OUT/seed_*"})
    overwrite: bool = field(default=False, metadata={"help": "replace fine-tunes already in OUT/seed_*"})
