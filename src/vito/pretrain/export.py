"""``vito export``: a run's trained encoder as a plain state dict that timm, torchvision or detectron2 load.

Only the online backbone leaves: the target network, attention pooling, projector and predictor are
training machinery. A sidecar ``OUT.json`` names the architecture so that evaluation can rebuild the
network from the exported file alone.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from vito.config import config_from_dict
from vito.engine.checkpoint import load_checkpoint
from vito.io import atomic_write, write_json

BACKBONE_PREFIX = "online.backbone."


def export_backbone(run: str | Path, fmt: str = "timm", out: str | Path = "backbone.pt") -> Path:
    """Write the online backbone of ``run`` (run folder or checkpoint) to ``out`` in format ``fmt``.

    ``timm``/``torchvision``: ``torch.save`` of a plain ``{name: tensor}`` dict for ``load_state_dict``.
    ``detectron2``: a pickle of detectron2's ``{"model": {name: ndarray}, ...}`` (conventionally ``.pkl``).
    """
    from vito.models.backbones import backbone_state_dict, create_backbone

    checkpoint = load_checkpoint(run)
    config = config_from_dict(checkpoint["config"])
    backbone = create_backbone(config.model.backbone, config.model.stages)
    weights = {k[len(BACKBONE_PREFIX):]: v for k, v in checkpoint["model"].items() if k.startswith(BACKBONE_PREFIX)}
    backbone.load_state_dict(weights, strict=True)
    state = backbone_state_dict(backbone, fmt)  # checks the format and the architecture

    out = Path(out)
    with atomic_write(out, mode="wb") as handle:
        if fmt == "detectron2":
            pickle.dump(state, handle)
        else:
            torch.save(state, handle)
    write_json(out.with_name(out.name + ".json"), sidecar(config.model.backbone, fmt, checkpoint))
    return out


def sidecar(backbone: str, fmt: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What evaluation needs to rebuild the exported network without the run folder."""
    return {"library": "timm", "name": backbone, "format": fmt, "source": checkpoint["path"],
            "step": checkpoint["step"]}
