"""Typed configuration: one schema holds every default; YAML presets and ``key=value`` overrides only change it.

Why dataclasses and not a dict: a typo in a YAML key or an override must fail loudly with the key's
name, not silently train the wrong model. ``load_config`` is the only way configs enter the program.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vito.schema import SchemaError, from_mapping, parse_yaml, read_yaml

PRESET_DIR = Path(__file__).parent / "configs"


ConfigError = SchemaError  # a config file or override is invalid; the message names the offending key


@dataclass
class DataConfig:
    """How views are cut out of videos (paper §3.1, docs/pretraining.md)."""

    window_seconds: float = 2.56  # clip window T; a shorter video uses its whole length
    num_views: int = 3  # V frames per clip
    sampling: Literal["marginal", "uniform", "delta", "same"] = "marginal"  # "same": every view from one frame (MoCLR)
    delta_seconds: float = 1.0  # gap between consecutive views for "delta" sampling
    image_size: int = 224  # side of each augmented view
    crop_min_scale: float = 0.4  # random-resized-crop minimum area (BYOL: 0.08)
    decode_short_side: int = 256  # frames are resized to this short side while decoding (speed)
    batch_size: int = 256  # global batch, in clips, summed over all processes
    num_workers: int = 4  # DataLoader workers per process (at most the CPUs available to it)
    clips_per_video: int = 1  # samples drawn from each video per pass over the data
    decode_device: Literal["auto", "cpu", "cuda"] = "auto"  # cuda: JPEG views decoded and cropped on the GPU
    # from shards (workers only read them); auto: cuda when training on CUDA from shards (docs/data_path.md)


@dataclass
class ModelConfig:
    """Encoder, multi-scale attention pooling and heads (paper §3.1, docs/pretraining.md)."""

    backbone: str = "resnet50"  # any timm model that supports features_only
    stages: list[int] = field(default_factory=lambda: [-2, -1])  # feature stages to pool (negative = from the end)
    attention: bool = True  # False: global average pooling at each stage
    attention_hidden: int = 0  # hidden width of each attention MLP; 0 = that stage's channel width
    projector_hidden: int = 4096
    projector_dim: int = 256
    predictor: bool = True  # online-branch predictor (BYOL/MoCLR)


@dataclass
class LossConfig:
    """The multi-view InfoNCE (paper eq. 3; docs/pretraining.md says where each value comes from)."""

    temperature: float = 0.1
    mask_same_video: bool = True  # other clips of a clip's own video are not its negatives (docs/pretraining.md)
    # cross_view: the other clips' keys of the target view (eq. 3); cross_and_same_view: also those of the
    # query's own view, as DetCon's byol_nce (vito.objective)
    negatives: Literal["cross_view", "cross_and_same_view"] = "cross_view"


# The paper's unit of training length (§4.3): an "epoch" is 1.28 M examples whatever the dataset, ImageNet's
# training set (BYOL's 1,281,167 images); here, 1,281,167 clips.
IMAGENET_EPOCH = 1_281_167


@dataclass
class OptimConfig:
    """LARS with linear warm-up and cosine decay; EMA target with BYOL's cosine tau schedule. The defaults are
    BYOL's preset for 300 epochs (docs/pretraining.md)."""

    base_lr: float = 0.3  # lr = base_lr * global_batch / 256
    weight_decay: float = 1e-6
    momentum: float = 0.9
    trust_coefficient: float = 0.001
    warmup_epochs: float | None = 10.0  # linear warm-up in epochs of IMAGENET_EPOCH clips (BYOL: 10)
    warmup_steps: int | None = None  # the warm-up in steps instead; when given it replaces warmup_epochs
    ema_base: float = 0.99  # BYOL: 0.99 for 300 epochs (0.996 for 1000)


@dataclass
class TrainConfig:
    max_steps: int = 93_835  # 300 epochs of IMAGENET_EPOCH clips at the presets' batch of 4096 (BYOL's formula)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5  # newest step_*.pt copies kept besides last.pt; 0 = keep all
    log_every: int = 10
    seed: int = 0
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast where the device supports it
    channels_last: bool = True
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    stop_grace_seconds: float = 30.0  # warn at start when a step is estimated to take longer (0: no estimate)
    # where the metrics go besides metrics.jsonl (vito.engine.loggers): wandb and mlflow are optional extras
    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Loading, overriding, validating


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped preset (``vito_r50``, ``moclr_r50``, ``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{Path(str(name_or_path)).stem}.yaml"
    if preset.is_file():
        return preset
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a preset (presets: {presets})")


# Keys added after runs existed without them, with the value that reproduces how such a run trained. A saved
# run's config (its config.yaml, a checkpoint's copy) that lacks one takes this value, not today's default, so
# that resuming an older run continues it as it was.
ADDED_KEYS: dict[str, Any] = {
    "loss.mask_same_video": False,  # before it, same-video clips were negatives like any other
    "loss.negatives": "cross_view",  # before it, only the target view's keys were negatives
    "optim.warmup_epochs": None,  # before it, the warm-up was optim.warmup_steps (saved with the run)
}


def with_added_keys(saved: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A saved run's config mapping with every missing :data:`ADDED_KEYS` entry filled in, and those keys."""
    filled, added = copy.deepcopy(saved), []
    for key, value in ADDED_KEYS.items():
        section, leaf = key.split(".")  # a config is sections of keys
        node = filled.setdefault(section, {})
        if isinstance(node, dict) and leaf not in node:  # a malformed section is left to the validation
            node[leaf] = value
            added.append(key)
    return filled, added


def load_config(name_or_path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                saved_run: bool = False) -> Config:
    """Schema defaults <- YAML file (if any) <- ``section.key=value`` overrides, then validated.

    ``saved_run``: the file is a run's own config.yaml, whose missing keys mean the values of :data:`ADDED_KEYS`.
    """
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        raw = with_added_keys(loaded)[0] if saved_run else loaded
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A checked ``Config`` from a mapping (by the schema's rules), then :func:`validate`."""
    config = from_mapping(Config, raw, where="config")
    validate(config)
    return config


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    *sections, leaf = key.strip().split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {section!r} is not a section")
    node[leaf] = parse_yaml(value, f"override {item!r}")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate(config: Config) -> None:
    """Value checks that types alone cannot express: values that would crash later or train nonsense."""
    _check_finite(config, "")
    d, m, o, t = config.data, config.model, config.optim, config.train
    _check(d.window_seconds > 0, "data.window_seconds", "must be > 0")
    _check(d.num_views >= 2, "data.num_views", "a contrastive objective needs at least 2 views")
    _check(d.delta_seconds >= 0, "data.delta_seconds", "must be >= 0")
    _check(d.image_size >= 16, "data.image_size", "must be >= 16")
    _check(0 < d.crop_min_scale <= 1, "data.crop_min_scale", "must be in (0, 1]")
    _check(d.decode_short_side >= d.image_size // 2, "data.decode_short_side", "must be >= image_size / 2")
    _check(d.batch_size >= 2, "data.batch_size", "InfoNCE needs >= 2 clips for negatives")
    _check(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(d.clips_per_video >= 1, "data.clips_per_video", "must be >= 1")
    _check(len(m.stages) >= 1, "model.stages", "name at least one stage")
    _check(len(set(m.stages)) == len(m.stages), "model.stages", "stages must be distinct")
    _check(m.attention_hidden >= 0, "model.attention_hidden", "must be >= 0")
    _check(m.projector_hidden > 0 and m.projector_dim > 0, "model.projector_dim", "widths must be > 0")
    _check(config.loss.temperature > 0, "loss.temperature", "must be > 0")
    _check(o.base_lr > 0, "optim.base_lr", "must be > 0")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _check(o.trust_coefficient >= 0, "optim.trust_coefficient", "must be >= 0")
    _check(0 <= o.ema_base <= 1, "optim.ema_base", "must be in [0, 1]")
    _check(o.warmup_steps is None or o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _check(o.warmup_epochs is None or o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    _check(o.warmup_steps is not None or o.warmup_epochs is not None, "optim.warmup_epochs",
           "give the warm-up in epochs or in steps (optim.warmup_steps); both are null")
    _check(t.max_steps >= 1, "train.max_steps", "must be >= 1")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    _check(t.log_every >= 1, "train.log_every", "must be >= 1")
    _check(t.keep_checkpoints >= 0, "train.keep_checkpoints", "must be >= 0 (0 keeps all)")
    _check(t.stop_grace_seconds >= 0, "train.stop_grace_seconds", "must be >= 0 (0: no step-time estimate)")
    _check(0 <= t.seed < 2**63, "train.seed", "must be in [0, 2^63)")
    _check(len(set(t.loggers)) == len(t.loggers), "train.loggers", "name each logger once")


def _check_finite(section: Any, prefix: str) -> None:
    """Every float of the config is finite: nan or inf in a temperature, window or lr trains nonsense."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            _check(math.isfinite(value), prefix + f.name, f"must be a finite number, got {value}")
