"""When computation runs in bf16: one answer for pretraining, fine-tuning and evaluation.

Why one module: "does this device compute in bf16?" was answered in three places with three slightly different
rules. Two policies remain, on purpose: pretraining's ``train.precision=bf16`` falls back to fp32 (with a log line)
on hardware without bf16 arithmetic, because emulated bf16 on such a CPU is several times slower than fp32;
evaluation and fine-tuning take ``--precision`` literally and resolve ``auto`` to bf16 on CUDA with bf16 support.
"""

from __future__ import annotations

import torch


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or
    AMX (elsewhere bf16 is emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, name, lambda: False)()
                   for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def uses_bf16(device: torch.device | str, precision: str = "auto") -> bool:
    """The evaluation / fine-tuning rule: ``bf16`` and ``fp32`` as asked; ``auto`` = bf16 on CUDA with bf16 support."""
    if precision != "auto":
        return precision == "bf16"
    return torch.device(device).type == "cuda" and bf16_supported(device)
