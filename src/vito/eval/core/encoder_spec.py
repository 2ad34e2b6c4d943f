"""Naming an encoder: the one ``--encoder/--weights/--random-init/--device/--precision`` path of every command
and suite row, the random-init rule, and the device and precision an encoder runs at."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vito.engine.precision import uses_bf16
from vito.errors import VitoError
from vito.eval.core.encoders import Encoder, encoder_fingerprint, is_outside, load_encoder
from vito.models.external import SPEC_HELP

# --------------------------------------------------------------------------------------------------
# Inference precision


@contextlib.contextmanager
def inference_mode(device: torch.device | str, precision: str = "auto") -> Iterator[None]:
    """``torch.inference_mode`` with bf16 autocast where ``precision`` asks for it (``auto``: CUDA with bf16)."""
    device = torch.device(device)
    enabled = uses_bf16(device, precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


# --------------------------------------------------------------------------------------------------
# The one encoder argument path: --encoder/--weights/--random-init/--device/--precision

ENCODER_HELP = (
    "a vito run folder or checkpoint (.pt), an exported backbone file, or "
    f"{SPEC_HELP} together with --weights FILE (or --random-init)"
)
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@dataclass
class EncoderSpec:
    """What names an encoder on the command line and in a suite file; ``check`` holds the random-init rule.

    An outside architecture (``timm:``/``torchvision:``) without ``--weights`` is only evaluated with an
    explicit ``--random-init``: a silently random network would be scored as if it were a model.
    """

    encoder: str
    weights: Path | None = None
    random_init: bool = False
    device: str = "auto"
    precision: Precision = "auto"

    def check(self) -> None:
        outside = is_outside(self.encoder)
        if self.random_init and (not outside or self.weights is not None):
            raise VitoError("--random-init is for a timm:NAME / torchvision:NAME encoder given without --weights")
        if outside and self.weights is None and not self.random_init:
            raise VitoError(f"{self.encoder} needs --weights FILE (or --random-init for a randomly initialised "
                            "baseline)")
        if not outside and self.weights is not None:
            raise VitoError("--weights is only used with timm:NAME or torchvision:NAME encoders")
        if self.precision not in PRECISIONS:
            raise VitoError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")

    def load(self) -> Encoder:
        """The checked encoder on its device, with its inference precision attached."""
        self.check()
        device = pick_device(self.device)
        encoder = load_encoder(self.encoder, weights=self.weights, device=device)
        encoder.precision = resolve_precision(self.precision, device)
        encoder.spec = self
        return encoder

    def identity(self) -> str:
        """Architecture + weights fingerprint without building the network (the feature cache's rule)."""
        self.check()
        return encoder_fingerprint(self.encoder, self.weights)

    def describe(self) -> dict[str, Any]:
        return {"spec": str(self.encoder), "weights": str(self.weights) if self.weights else None,
                "random_init": self.random_init, "identity": self.identity(), "precision": self.precision}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "EncoderSpec":
        return cls(str(args.encoder), args.weights, args.random_init, args.device, args.precision)


def describe_encoder(encoder: Encoder) -> dict[str, Any]:
    """What a Result records of an encoder already loaded (the Python API's ``vito.evaluate``): the description
    of the EncoderSpec it was loaded from, so that it matches ``vito eval`` with the same options; an encoder
    built otherwise is named by its label and weights fingerprint."""
    if encoder.spec is not None:
        return encoder.spec.describe()
    return {"spec": encoder.name, "weights": None, "random_init": False, "identity": encoder.fingerprint,
            "precision": encoder.precision}


def add_encoder_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--encoder --weights --random-init --device --precision``: the same five options on every command."""
    parser.add_argument("--encoder", required=required, default=None, help=ENCODER_HELP)
    parser.add_argument("--weights", type=Path, default=None, help="local weights file for a timm:/torchvision: encoder")
    parser.add_argument("--random-init", action="store_true",
                        help="evaluate a timm:/torchvision: encoder at its (seeded) random initialisation, no --weights")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="inference precision: auto (bf16 on CUDA with bf16 support, else fp32), fp32, bf16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` → bf16 on CUDA with bf16 support, else fp32; an explicit choice is kept."""
    if precision == "auto":
        return "bf16" if uses_bf16(device) else "fp32"
    return precision
