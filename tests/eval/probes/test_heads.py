"""Linear heads on frozen features: the lr sweep on separable and random data, saving and loading a head."""

from __future__ import annotations

import pytest
import torch

from tests.eval.probes.helpers import clusters
from vito.errors import VitoError
from vito.eval.probes.heads import (
    LinearProbeSettings,
    load_linear_head,
    save_linear_head,
    train_linear_probe,
)


def test_linear_probe_sweep_separable_and_random() -> None:
    train_x, train_y = clusters(40, 4, 8, seed=0)
    val_x, val_y = clusters(20, 4, 8, seed=1)
    settings = LinearProbeSettings(lrs=(0.4, 0.05), epochs=20, probe_batch_size=64)
    result = train_linear_probe(train_x, train_y, val_x, val_y, 4, settings)
    assert set(result.sweep) == {0.4, 0.05}
    assert result.val_metrics["top1"] == 1.0
    assert result.best_lr in (0.4, 0.05)
    random_y = torch.randint(0, 4, train_y.shape, generator=torch.Generator().manual_seed(2))
    random_val_y = torch.randint(0, 4, val_y.shape, generator=torch.Generator().manual_seed(3))
    held = train_linear_probe(train_x, random_y, val_x, random_val_y, 4, LinearProbeSettings(
        lrs=(0.1,), epochs=20, probe_batch_size=64, holdout_fraction=0.25))
    assert held.selection == "holdout"
    assert held.val_metrics["top1"] < 0.5


def test_linear_head_round_trip(tmp_path) -> None:
    head = torch.nn.Linear(6, 3)
    path = tmp_path / "head.pt"
    save_linear_head(path, head, {"classes": ["a", "b", "c"]})
    loaded = load_linear_head(path)
    x = torch.randn(4, 6)
    assert torch.allclose(loaded(x), head(x))
    assert loaded.meta["classes"] == ["a", "b", "c"]
    (tmp_path / "bad.pt").write_bytes(b"not a head")
    with pytest.raises(VitoError):
        load_linear_head(tmp_path / "bad.pt")
