"""One interface for every encoder we evaluate: a vito run, an exported backbone, or an outside model.

Why one interface: every evaluation (probes, DAVIS, UCF-101, human alignment) must treat VITO and its
baselines identically, so the only thing an evaluation sees is an ``Encoder``: stage feature maps,
a global-average-pooled embedding, VITO's attention maps and attention-pooled embedding when there are any,
the ImageNet head of an outside classifier when there is one, and the preprocessing its inputs take.

Stages are numbered like timm's ``feature_info`` (ResNet: 0 = stem, 1..4 = res2..res5) and may be
negative (``-2`` = res4, ``-1`` = res5), as in the model config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vito.config import config_from_dict
from vito.engine.checkpoint import LAST, checkpoint_dir, load_checkpoint
from vito.errors import VitoError
from vito.eval.core.inputs import EvalTransform
from vito.models.backbones import backbone_state_dict
from vito.models.external import create_architecture, parse_spec, read_state_dict
from vito.models.vito import VitoNetwork

TORCHVISION_RESNET_STAGES = ["relu", "layer1", "layer2", "layer3", "layer4"]


class Encoder(nn.Module):
    """A frozen image encoder in eval mode: ``[B, 3, H, W]`` normalised images in, features out.

    ``transform`` turns a PIL image or a uint8 ``[..., 3, H, W]`` tensor into such an input: the ImageNet
    evaluation view every evaluation uses (centre crop of 224/256 of the short side, bicubic resize to 224,
    mean/std normalisation; :class:`vito.eval.core.inputs.EvalTransform`). ``embed`` gives the linear-probe
    feature of any encoder, ``pooled`` the embedding VITO trains (its attention pooling), for vito runs only.
    """

    def __init__(
        self,
        model: nn.Module,
        library: str,
        arch: str,
        name: str = "",
        classifier: nn.Module | None = None,
        network: nn.Module | None = None,
        fingerprint: str = "",
        attention_pooling: bool | None = None,
    ) -> None:
        super().__init__()
        self.model = model  # the full timm/torchvision architecture (its head is unused by embed)
        self.library = library
        self.arch = arch
        self.name = name or f"{library}:{arch}"  # for reports
        self.classifier = classifier
        self.network = network  # the VitoNetwork, for attention maps
        # a vito run trained with average pooling (model.attention=false) has a network but no attention
        self.attention_pooling = network is not None if attention_pooling is None else attention_pooling
        self.fingerprint = fingerprint or self.name  # identifies architecture + weights, for feature caches
        self.precision = "auto"  # inference precision (EncoderSpec.load resolves it: fp32 or bf16)
        self.spec: Any = None  # the EncoderSpec it was loaded from (set by EncoderSpec.load), for Result.encoder
        self.transform = EvalTransform()  # its evaluation preprocessing (see the class docstring)
        self.stage_names = _stage_module_names(model, library, arch)
        self._extractors: dict[tuple[int, ...], nn.Module] = {}
        self._unstrided: set[int] = set()  # stages whose stride was removed
        self.eval().requires_grad_(False)

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    @property
    def feature_dim(self) -> int:
        return self.stage_channels()[-1]

    def stage_channels(self) -> list[int]:
        """Output channels of every stage (probed once with a tiny image)."""
        if not hasattr(self, "_channels"):
            device = next(self.model.parameters()).device
            with torch.no_grad():
                maps = self.feature_maps(torch.zeros(1, 3, 64, 64, device=device), range(self.num_stages))
            self._channels = [m.shape[1] for m in maps]
        return self._channels

    def resolve_stages(self, stages: Sequence[int]) -> list[int]:
        """Negative stage numbers count from the end; out-of-range numbers are a user error."""
        resolved = []
        for stage in stages:
            index = stage + self.num_stages if stage < 0 else stage
            if not 0 <= index < self.num_stages:
                raise VitoError(f"stage {stage} does not exist: {self.name} has stages 0..{self.num_stages - 1}")
            resolved.append(index)
        return resolved

    def feature_maps(self, images: torch.Tensor, stages: Sequence[int] = (-1,)) -> list[torch.Tensor]:
        """NCHW feature maps of the chosen stages, computing only as deep as the deepest one needs."""
        indices = self.resolve_stages(list(stages))
        wanted = sorted(set(indices))
        if self.library == "timm":
            maps = self.model.forward_intermediates(
                images, indices=wanted, intermediates_only=True, stop_early=True
            )
        else:
            maps = list(self._torchvision_extractor(tuple(wanted))(images).values())
        by_stage = dict(zip(wanted, maps))
        return [by_stage[i] for i in indices]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, D]``: global average pool of the last stage (the linear-probe feature)."""
        return self.feature_maps(images, [-1])[0].float().mean(dim=(2, 3))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, D]``: the embedding VITO trains, its multi-scale pooling of the pooled stages (res4 and res5 by
        default, concatenated: 1024 + 2048 = 3072 features for a ResNet-50), before the projector.

        Attention pooling for a run trained with it (``model.attention=true``, the default), per-stage average
        pooling for one trained without. Only a vito run or checkpoint has it: other encoders raise ``VitoError``
        (use ``embed``).
        """
        if self.network is None:
            raise VitoError(f"{self.name} has no VITO pooling (it is not a vito run or checkpoint): "
                            "use embed(images), the average-pooled last stage")
        pooled, _ = self.network.pool(self.network.backbone(images))
        return pooled.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``embed(images)``: the linear-probe feature."""
        return self.embed(images)

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """VITO's attention-pooling weights per pooled stage, ``[B, h, w]`` each; None without attention pooling."""
        if self.network is None or not self.attention_pooling:
            return None
        return list(self.network.attention_maps(images))

    def stage_module(self, stage: int) -> nn.Module:
        return self.model.get_submodule(self.stage_names[self.resolve_stages([stage])[0]])

    def remove_stride(self, stage: int) -> None:
        """Make ``stage`` keep its input resolution by setting its strided convs/pools to stride 1.

        No dilation is added, exactly as VFS's test-time ``strides=(1, 2, 1, 1)``: res4 then has stride 8.
        Calling it again for the same stage changes nothing.
        """
        index = self.resolve_stages([stage])[0]
        if index in self._unstrided:
            return
        changed = 0
        for module in self.stage_module(stage).modules():
            if isinstance(module, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)) and stride_of(module) != (1, 1):
                module.stride = (1, 1) if isinstance(module, nn.Conv2d) else 1
                changed += 1
        if changed == 0:
            raise VitoError(f"stage {stage} of {self.name} has no strided layer to remove")
        self._unstrided.add(index)
        self._extractors.clear()
        if hasattr(self, "_channels"):
            del self._channels

    def _torchvision_extractor(self, indices: tuple[int, ...]) -> nn.Module:
        if indices not in self._extractors:
            # torchvision's model zoo loads with it: kept out of `vito eval --help`, which imports this module
            from torchvision.models.feature_extraction import create_feature_extractor

            nodes = {self.stage_names[i]: str(i) for i in indices}
            # batch norms stay leaves (any subclass, e.g. vito's CPU synchronised one, is not traced into); the
            # extractor shares its modules with ``model``, so it takes the model's mode (``.eval()`` here would
            # switch a fine-tuned model's batch norms to eval mode)
            leaves = {"leaf_modules": [nn.modules.batchnorm._BatchNorm]}
            extractor = create_feature_extractor(self.model, return_nodes=nodes, tracer_kwargs=leaves)
            self._extractors[indices] = extractor.train(self.model.training)
        return self._extractors[indices]


def stride_of(module: nn.Module) -> tuple[int, int]:
    stride = module.stride
    return tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)


def _stage_module_names(model: nn.Module, library: str, name: str) -> list[str]:
    if library == "timm":
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
            raise VitoError(f"timm:{name} does not expose intermediate features; choose a CNN such as resnet50")
        return [info["module"] for info in model.feature_info]
    if all(hasattr(model, n) for n in TORCHVISION_RESNET_STAGES[1:]):
        return list(TORCHVISION_RESNET_STAGES)
    raise VitoError(f"torchvision:{name} is not a ResNet-family model; use timm:{name} for stage features")


# --------------------------------------------------------------------------------------------------
# Loading


RANDOM_INIT_SEED = 0  # random-init baselines are the same network in every run (and so can share feature caches)


def load_encoder(spec: str | Path, weights: str | Path | None = None, device: str | torch.device = "cpu") -> Encoder:
    """An ``Encoder`` from a vito run folder/checkpoint, an exported file, or ``timm:NAME``/``torchvision:NAME``.

    ``weights`` is only for ``timm:``/``torchvision:`` specs; without it the architecture keeps a random
    initialisation drawn with a fixed seed (a reproducible baseline). Weights that do not fit the
    architecture raise ``VitoError``.
    """
    text = str(spec)
    if text.startswith(("timm:", "torchvision:")):
        encoder = _load_outside_model(text, weights)
    else:
        path = Path(text)
        if weights is not None:
            raise VitoError("--weights is only used with timm:NAME or torchvision:NAME encoders")
        if not path.exists():
            raise VitoError(f"encoder {text!r} is neither timm:/torchvision:NAME nor an existing file or folder")
        exported = _exported_weights(path)
        if exported is not None:
            encoder = _load_exported(*exported)
        else:
            encoder = _load_vito_checkpoint(path)
    return encoder.to(device)


def _fingerprint(*parts: Any) -> str:
    text = "|".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_identity(path: str | Path) -> str:
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _head_of(model: nn.Module, library: str) -> nn.Module | None:
    head = model.get_classifier() if library == "timm" else getattr(model, "fc", None)
    return head if isinstance(head, nn.Linear) else None


def _load_outside_model(spec: str, weights: str | Path | None) -> Encoder:
    library, name = parse_spec(spec)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's random stream alone
        torch.manual_seed(RANDOM_INIT_SEED)
        model = create_architecture(spec)
    if weights is not None:
        _load_strict(model, read_state_dict(weights), f"weights in {weights}", spec)
    label = f"{spec} ({Path(weights).name})" if weights is not None else f"{spec} (random init)"
    return Encoder(
        model, library, name, label, classifier=_head_of(model, library), fingerprint=encoder_fingerprint(spec, weights)
    )


def _exported_weights(path: Path) -> tuple[Path, str, str] | None:
    """``(weights file, format, architecture)`` of a ``vito export``, None for anything else (a run).

    Three kinds: a state dict with its ``FILE.json`` sidecar; a ``.safetensors`` file whose header metadata names
    the architecture (``vito.architecture``); a timm-hub folder (``config.json`` + ``model.safetensors``).
    """
    sidecar = Path(f"{path}.json")
    if path.is_file() and sidecar.is_file():
        try:
            info = json.loads(sidecar.read_text())
            return path, info.get("format", info["library"]), info["name"]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise VitoError(f"{sidecar} must be JSON with 'library', 'name' and 'format': {error}") from error
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                name = (handle.metadata() or {}).get("vito.architecture")
        except (SafetensorError, OSError) as error:
            raise VitoError(f"{path} is not a readable safetensors file: {error}") from error
        if name is None:
            raise VitoError(f"{path} names no architecture (not a vito export): evaluate it as "
                            f"--encoder timm:NAME --weights {path}")
        return path, "timm", name
    if path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        try:
            return path / "model.safetensors", "timm", json.loads((path / "config.json").read_text())["architecture"]
        except (ValueError, KeyError, TypeError) as error:
            raise VitoError(f"{path / 'config.json'} is not a timm hub config with an 'architecture': "
                            f"{error}") from error
    return None


def _load_exported(path: Path, fmt: str, name: str) -> Encoder:
    """An exported backbone: a state dict in the key layout of ``fmt`` for the architecture ``name``."""
    if fmt not in ("timm", "torchvision"):
        raise VitoError(f"{path} is a {fmt} export; evaluate the run folder or a timm/torchvision export instead")
    spec = f"{fmt}:{name}"  # the format says whose key layout (and so whose architecture) the file has
    model = create_architecture(spec)
    state = read_state_dict(path)
    head = _head_of(model, parse_spec(spec)[0])
    head_keys = [k for k in state if k.startswith(_head_prefix(model, spec))]
    has_head = any(bool(state[k].any()) for k in head_keys)  # vito exports carry an all-zero head
    _load_strict(model, state, f"exported weights {path}", spec, allow_missing_head=not head_keys)
    return Encoder(
        model, parse_spec(spec)[0], name, f"{spec} ({path.name})", classifier=head if has_head else None,
        fingerprint=_fingerprint(spec, _file_identity(path)),
    )


def _head_prefix(model: nn.Module, spec: str) -> str:
    library, _ = parse_spec(spec)
    if library == "timm":
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name + "."
    return "fc."


def _load_strict(
    model: nn.Module, state: dict[str, torch.Tensor], what: str, spec: str, allow_missing_head: bool = False
) -> None:
    """Load ``state``; only a missing classifier head is tolerated (and only when asked)."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatch
        raise VitoError(f"{what} do not fit {spec}: {error}") from error
    prefix = _head_prefix(model, spec)
    tolerated = [k for k in missing if allow_missing_head and k.startswith(prefix)]
    missing = [k for k in missing if k not in tolerated]
    if missing or unexpected:
        raise VitoError(
            f"{what} do not fit {spec}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def _load_vito_checkpoint(path: Path) -> Encoder:
    """The online encoder of a vito run: its backbone as a full timm model, plus the network for attention."""
    checkpoint = load_checkpoint(path)  # checks the format
    config = config_from_dict(checkpoint["config"])
    network = VitoNetwork(config.model)
    online = {k[len("online."):]: v for k, v in checkpoint["model"].items() if k.startswith("online.")}
    try:
        network.load_state_dict(online, strict=True)
    except RuntimeError as error:
        raise VitoError(f"checkpoint {path} does not fit model {config.model.backbone}: {error}") from error
    spec = f"timm:{config.model.backbone}"
    model = create_architecture(spec)
    _load_strict(model, backbone_state_dict(network.backbone, "timm"), f"backbone of {path}", spec)
    step = checkpoint.get("step", 0)
    fingerprint = encoder_fingerprint(path)
    label = f"vito {config.model.backbone} step {step} ({path})"
    return Encoder(model, "timm", config.model.backbone, label, network=network.eval(), fingerprint=fingerprint,
                   attention_pooling=config.model.attention)


def is_outside(spec: str | Path) -> bool:
    return str(spec).startswith(("timm:", "torchvision:"))


def encoder_fingerprint(spec: str | Path, weights: str | Path | None = None) -> str:
    """Identity of architecture + weights: the file's path, size and mtime, or the random-init seed."""
    text = str(spec)
    if is_outside(text):
        identity = _file_identity(weights) if weights is not None else f"random-init seed {RANDOM_INIT_SEED}"
        return _fingerprint(text, identity)
    path = Path(text)
    if not path.exists():
        raise VitoError(f"encoder {text!r} is neither timm:/torchvision:NAME nor an existing file or folder")
    exported = _exported_weights(path)
    if exported is not None:
        weights_file, fmt, name = exported
        return _fingerprint(f"{fmt}:{name}", _file_identity(weights_file))
    checkpoint = path if path.is_file() else checkpoint_dir(path) / LAST
    return _fingerprint("vito", _file_identity(checkpoint))
