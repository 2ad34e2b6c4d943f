"""``vito export``: a run's trained encoder in the files other libraries load, without vito.

Only the online backbone leaves: the target network, attention pooling, projector and predictor are
training machinery. Five formats:

- ``timm`` / ``torchvision`` (``.pt``/``.pth``) and ``detectron2`` (``.pkl``): a plain state dict, with a sidecar
  ``OUT.json`` naming the architecture so that evaluation can rebuild the network from the file alone.
- ``safetensors`` (``.safetensors``): the timm state dict *without* a classifier (``num_classes=0``), in the
  format that executes nothing on load; the architecture and provenance (run, step, config digest) are in the
  file's header metadata, so the file alone is enough.
- ``timm-hub`` (a folder): ``config.json`` + ``model.safetensors``, the layout of the Hugging Face hub that
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads and ``huggingface-cli upload`` publishes as it
  is. ``config.json`` is what timm's own ``save_config_for_hf`` writes for the headless network (architecture,
  ``num_classes: 0``, ``num_features``, ``global_pool``, the ``pretrained_cfg`` with input size and
  normalisation), with the fields that describe timm's *own* pretrained weights (tag, paper, licence, URL) left
  out, and vito's provenance under a ``"vito"`` key, which timm ignores.

Every destination is checked before anything is written: the suffix must match the format, an existing file is
only replaced with ``overwrite=True``, and an unwritable folder is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vito.config import config_from_dict
from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.io import atomic_write, write_json

BACKBONE_PREFIX = "online.backbone."
HUB_CONFIG, HUB_WEIGHTS = "config.json", "model.safetensors"
SUFFIXES = {"timm": (".pt", ".pth"), "torchvision": (".pt", ".pth"), "detectron2": (".pkl",),
            "safetensors": (".safetensors",), "timm-hub": ()}  # timm-hub: --out is a folder
FORMATS = tuple(SUFFIXES)
# pretrained_cfg fields that describe the weights timm itself publishes for an architecture, not ours
TIMM_WEIGHT_FIELDS = ("tag", "hf_hub_id", "url", "file", "origin_url", "paper_ids", "paper_name", "license", "notes",
                      "test_input_size", "test_crop_pct", "test_pool_size", "label_names", "label_descriptions")


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the path (a file, or the timm-hub folder), the files, and how to load them."""

    path: Path
    files: tuple[Path, ...]
    architecture: str
    step: int
    how_to_load: str


def export_backbone(run: str | Path, fmt: str = "timm", out: str | Path = "backbone.pt",
                    overwrite: bool = False) -> Path:
    """Write the online backbone of ``run`` (run folder or checkpoint) to ``out`` in format ``fmt``; the path."""
    return export(run, fmt, out, overwrite).path


def export(run: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> Exported:
    """Write the online backbone of ``run`` to ``out`` in format ``fmt`` (see the module's docstring).

    ``timm``/``torchvision``: ``torch.save`` of a plain ``{name: tensor}`` dict for ``load_state_dict``.
    ``detectron2``: a pickle of detectron2's ``{"model": {name: ndarray}, ...}``.
    """
    out = Path(out)
    targets = destination_files(fmt, out)
    check_destination(targets, out, overwrite)
    from vito.models.backbones import backbone_state_dict

    checkpoint = load_checkpoint(run)
    backbone = _trained_backbone(checkpoint)
    provenance = export_provenance(checkpoint, backbone.name)
    try:
        if fmt == "timm-hub":
            _write_hub_folder(out, backbone, provenance)
        elif fmt == "safetensors":
            _write_safetensors(out, headless_state_dict(backbone), provenance)
        else:
            state = backbone_state_dict(backbone, fmt)  # checks the format and the architecture
            with atomic_write(out, mode="wb") as handle:
                if fmt == "detectron2":
                    pickle.dump(state, handle)
                else:
                    torch.save(state, handle)
            write_json(targets[1], sidecar(backbone.name, fmt, checkpoint))
    except OSError as error:
        raise VitoError(f"cannot write {out}: {error.strerror or error}") from error
    return Exported(out, targets, backbone.name, int(checkpoint["step"]), how_to_load(fmt, out, backbone.name))


def destination_files(fmt: str, out: Path) -> tuple[Path, ...]:
    """The files an export to ``out`` writes; a suffix that does not fit ``fmt`` is refused here."""
    if fmt not in SUFFIXES:
        raise VitoError(f"export format {fmt!r} is not one of {list(FORMATS)}")
    if fmt == "timm-hub":
        if out.suffix in {s for suffixes in SUFFIXES.values() for s in suffixes}:
            raise VitoError(f"--format timm-hub writes a folder ({HUB_CONFIG} + {HUB_WEIGHTS}): --out {out} names a "
                            f"{out.suffix} file; give a folder, or use a file format")
        if out.exists() and not out.is_dir():
            raise VitoError(f"--format timm-hub writes a folder, and {out} is a file")
        return (out / HUB_WEIGHTS, out / HUB_CONFIG)
    if out.suffix not in SUFFIXES[fmt]:
        wanted = " or ".join(SUFFIXES[fmt])
        raise VitoError(f"--format {fmt} writes a {wanted} file, not {out.name!r}: name it "
                        f"{out.stem}{SUFFIXES[fmt][0]} or choose the format that matches its suffix")
    return (out,) if fmt == "safetensors" else (out, out.with_name(out.name + ".json"))


def check_destination(targets: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, a destination that holds an export or cannot be written."""
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise VitoError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
                        "pass --overwrite to replace it, or choose another --out")
    folder = targets[0].parent
    while not folder.exists():  # the nearest folder that exists is the one a new file or folder goes into
        folder = folder.parent
    if not folder.is_dir():
        raise VitoError(f"cannot write {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VitoError(f"cannot write {out}: the folder {folder} is not writable")


def _trained_backbone(checkpoint: dict[str, Any]) -> Any:
    from vito.models.backbones import create_backbone

    config = config_from_dict(checkpoint["config"])
    backbone = create_backbone(config.model.backbone, config.model.stages)
    weights = {k[len(BACKBONE_PREFIX):]: v for k, v in checkpoint["model"].items() if k.startswith(BACKBONE_PREFIX)}
    try:
        backbone.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise VitoError(f"checkpoint {checkpoint['path']} does not fit model {config.model.backbone}: "
                        f"{str(error).splitlines()[0]}") from error
    return backbone


def export_provenance(checkpoint: dict[str, Any], architecture: str) -> dict[str, str]:
    """Where the weights come from: the checkpoint, its step and a digest of the run's resolved config (the
    SHA-256 of its canonical JSON), which tells two exports of differently configured runs apart."""
    config_json = json.dumps(checkpoint["config"], sort_keys=True, separators=(",", ":"), default=str)
    return {"architecture": architecture, "run": str(Path(checkpoint["path"]).resolve()),
            "step": str(checkpoint["step"]), "config_sha256": hashlib.sha256(config_json.encode()).hexdigest()}


def sidecar(backbone: str, fmt: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What evaluation needs to rebuild the exported network without the run folder."""
    return {"library": "timm", "name": backbone, "format": fmt, "source": checkpoint["path"],
            "step": checkpoint["step"]}


def headless_state_dict(backbone: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``timm.create_model(name, num_classes=0)``: the trained network without a classifier
    (self-supervised training has none; a head of zeros would only pretend to be one)."""
    import timm

    from vito.models.backbones import backbone_state_dict

    full = backbone_state_dict(backbone, "timm")
    with torch.device("meta"):
        keys = list(timm.create_model(backbone.name, pretrained=False, num_classes=0).state_dict())
    missing = [k for k in keys if k not in full]
    if missing:
        raise VitoError(f"{backbone.name}: the headless timm model has weights {missing[:3]} the export lacks")
    return {k: full[k].detach().contiguous().clone() for k in keys}


def _write_safetensors(path: Path, state: dict[str, torch.Tensor], provenance: dict[str, str]) -> None:
    """``format: pt`` is the key the Hugging Face libraries expect; vito's own keys are prefixed ``vito.``."""
    from safetensors.torch import save

    metadata = {"format": "pt", **{f"vito.{key}": value for key, value in provenance.items()}}
    data = save(state, metadata=metadata)
    with atomic_write(path, mode="wb") as handle:
        handle.write(data)


def _write_hub_folder(folder: Path, backbone: Any, provenance: dict[str, str]) -> None:
    """``model.safetensors`` first, ``config.json`` last: a folder with a config always has its weights."""
    state = headless_state_dict(backbone)
    config = hub_config(backbone.name, state, provenance)
    folder.mkdir(parents=True, exist_ok=True)
    _write_safetensors(folder / HUB_WEIGHTS, state, provenance)
    write_json(folder / HUB_CONFIG, config)


def hub_config(architecture: str, state: dict[str, torch.Tensor], provenance: dict[str, str]) -> dict[str, Any]:
    """``config.json`` as timm's ``save_config_for_hf`` writes it for the headless network (built here and loaded
    strictly with ``state``, so the config describes exactly these weights), normalised as vito trained it."""
    import timm
    from timm.models._hub import save_config_for_hf

    from vito.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

    model = timm.create_model(architecture, pretrained=False, num_classes=0)
    model.load_state_dict(state, strict=True)
    with tempfile.TemporaryDirectory() as scratch:
        save_config_for_hf(model, str(Path(scratch) / HUB_CONFIG))
        config = json.loads((Path(scratch) / HUB_CONFIG).read_text())
    pretrained_cfg = {k: v for k, v in config.get("pretrained_cfg", {}).items() if k not in TIMM_WEIGHT_FIELDS}
    pretrained_cfg.update(num_classes=0, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    features = [{"channels": info["num_chs"], "reduction": info["reduction"], "module": info["module"]}
                for info in model.feature_info]
    vito = {**provenance, "step": int(provenance["step"]), "feature_info": features}
    return {**config, "num_classes": 0, "pretrained_cfg": pretrained_cfg, "vito": vito}


def how_to_load(fmt: str, out: Path, architecture: str) -> str:
    """One line of Python that loads the export, printed by ``vito export``."""
    where = str(out)
    if fmt == "timm-hub":
        return f"timm.create_model('local-dir:{where}', pretrained=True)"
    if fmt == "safetensors":
        return (f"timm.create_model('{architecture}', num_classes=0).load_state_dict("
                f"safetensors.torch.load_file('{where}'))")
    if fmt == "detectron2":
        return f"MODEL.WEIGHTS {where} in a detectron2 config (a ResNet-{architecture.removeprefix('resnet')} backbone)"
    builder = f"torchvision.models.{architecture}()" if fmt == "torchvision" else f"timm.create_model('{architecture}')"
    return f"{builder}.load_state_dict(torch.load('{where}', weights_only=True))"
