"""vito: self-supervised video pretraining (VITO) and an evaluation suite for the representations it learns.

The Python API, for one's own scripts (docs/python.md); the ``vito`` command runs the same functions.

Pretraining, piece by piece or whole:

- ``load_config(name_or_path, overrides=())``: a preset (``vito_r50``, ``moclr_r50``, ``demo``) or YAML file, with
  ``section.key=value`` overrides, as a typed ``Config``;
- ``build_vito(config)``: the model (``Vito``: online network, predictor, EMA target, the loss);
- ``pretrain_loader(data, config, seed)``: batches of uint8 crops from a folder of videos, a manifest or shards;
- ``make_views(batch, config, generator)``: a batch's crops → augmented, normalised views;
- ``multiview_info_nce``: VITO's loss, for a model of one's own;
- ``run_pretraining(config, data, run_dir)``: the whole run (``vito pretrain``), resumable, on 1..K processes.

Evaluation:

- ``load_encoder(spec_or_path, weights=None, random_init=False)``: a vito run, an exported backbone, or a
  ``timm:NAME`` / ``torchvision:NAME`` architecture, as an ``Encoder`` (``embed``, ``pooled``, ``transform``);
- ``evaluate(name, encoder, out_dir, **settings)``: one evaluation (``vito eval NAME``), its ``Result`` written to
  ``out_dir/result.json`` exactly as the command writes it; ``list_evaluations()`` names them.

Everything is imported on first use, so ``import vito`` (and ``vito --help``) stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from vito.config import Config
    from vito.eval.core.encoders import Encoder
    from vito.eval.core.result import Result

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Encoder",
    "Result",
    "Vito",
    "build_vito",
    "evaluate",
    "list_evaluations",
    "load_config",
    "load_encoder",
    "make_views",
    "multiview_info_nce",
    "pretrain_loader",
    "run_pretraining",
]

# name -> the module that defines it (each keeps its own docstring), imported on first access
_LAZY = {
    "Config": "vito.config",
    "load_config": "vito.config",
    "Vito": "vito.models.vito",
    "build_vito": "vito.models.vito",
    "make_views": "vito.data.augment",
    "multiview_info_nce": "vito.objective",
    "Encoder": "vito.eval.core.encoders",
    "Result": "vito.eval.core.result",
}
_RENAMED = {"run_pretraining": ("vito.pretrain.loop", "pretrain")}  # `vito.pretrain` is the package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _RENAMED:
        module, attribute = _RENAMED[name]
        value = getattr(importlib.import_module(module), attribute)
    else:
        raise AttributeError(f"module 'vito' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def pretrain_loader(data: str | Path, config: Config, seed: int | None = None) -> DataLoader:
    """Batches for pretraining in one process: a folder of videos (searched recursively), a CSV/JSONL manifest
    with a ``path`` column, or a folder of ``vito prepare`` shards.

    Each batch is ``{"views": uint8 [B, V, 3, S, S], "video_index": int64 [B], "skipped": [(path, reason)]}``:
    ``B = data.batch_size`` clips of ``V = data.num_views`` crops each (``S = data.image_size``), sampled as
    ``config.data`` says; ``video_index`` names each clip's video (for the loss's same-video rule). The stream is
    endless and a pure function of ``seed`` (default ``train.seed``) and the step: the same seed gives the same
    batches. Unreadable videos are skipped and listed, never fatal, unless none is usable. ``data.num_workers``
    decoding processes (0: decode in this process).
    """
    from vito.data.pretrain_batches import build_pretrain_loader

    return build_pretrain_loader(data, config.data, config.train.seed if seed is None else seed)


def load_encoder(spec_or_path: str | Path, weights: str | Path | None = None, random_init: bool = False, *,
                 device: str = "auto", precision: str = "auto") -> Encoder:
    """A frozen ``Encoder`` in eval mode, named as ``vito eval --encoder`` names it.

    ``spec_or_path``: a vito run folder or checkpoint (``.pt``), a backbone exported by ``vito export``, or
    ``timm:NAME`` / ``torchvision:NAME`` with a local ``weights`` file. An architecture without weights is only
    loaded with ``random_init=True`` (a seeded, reproducible random baseline): a silently random network must not
    be scored as if it were a model. ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda:N``;
    ``precision``: ``auto`` (bf16 on CUDA with bf16 support), ``fp32`` or ``bf16``, for the evaluations.

    ``encoder.embed(images)`` is the linear-probe feature, ``encoder.pooled(images)`` VITO's attention-pooled
    embedding (vito runs only), ``encoder.transform`` the preprocessing its images take.
    """
    from vito.eval.core.encoder_spec import EncoderSpec

    return EncoderSpec(str(spec_or_path), Path(weights) if weights is not None else None, random_init, device,
                       precision).load()


def evaluate(name: str, encoder: Encoder | str | Path | None, out_dir: str | Path, **settings: Any) -> Result:
    """Run evaluation ``name`` (see ``list_evaluations()``) as ``vito eval NAME`` does, and return its Result.

    ``encoder``: an ``Encoder`` (from ``load_encoder``), a spec or path that ``load_encoder`` would take without
    further arguments, or None for the evaluations that score files (``davis --results``, ``detect
    --predictions``, ...). ``settings``: the evaluation's settings, named as its options in ``vito eval NAME
    --help`` with underscores (``num_workers=0``), with values of their type (numbers, lists, paths or text).
    ``out_dir`` receives ``result.json`` and ``result.md``, the same files the command writes; a folder holding
    another run's result is refused.
    """
    from vito.eval.core.encoder_spec import EncoderSpec
    from vito.eval.core.encoders import Encoder
    from vito.eval.core.registry import get, settings_from_mapping
    from vito.eval.core.running import run_evaluation

    parsed = settings_from_mapping(get(name), settings)
    if encoder is None or isinstance(encoder, Encoder):
        return run_evaluation(name, parsed, Path(out_dir), encoder=encoder)
    return run_evaluation(name, parsed, Path(out_dir), EncoderSpec(str(encoder)))


def list_evaluations() -> list[str]:
    """The names ``evaluate`` (and ``vito eval NAME``) accepts, sorted."""
    from vito.eval.core.registry import discover

    return sorted(discover())
