"""The one bf16 rule of evaluation and fine-tuning, and the hardware check pretraining falls back on."""

from __future__ import annotations

import torch

from vito.engine.precision import bf16_supported, uses_bf16


def test_precision_is_taken_literally_and_auto_means_bf16_only_on_a_capable_gpu(monkeypatch) -> None:
    assert uses_bf16("cpu", "bf16") and not uses_bf16("cpu", "fp32")
    assert not uses_bf16("cpu", "auto")  # never bf16 on a CPU unless asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert uses_bf16("cuda", "auto") and uses_bf16(torch.device("cuda:1"), "auto")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not uses_bf16("cuda", "auto") and not bf16_supported("cuda")


def test_cpu_bf16_needs_avx512_bf16_or_amx(monkeypatch) -> None:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not bf16_supported("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert bf16_supported("cpu")
    assert not bf16_supported("meta")
