"""The VITO model end to end on tiny inputs: forward, backward, EMA target, attention maps."""

from __future__ import annotations

import math

import pytest
import torch

from vito.config import LossConfig, ModelConfig
from vito.models.vito import Vito, VitoNetwork, normalised_entropy

TINY = ModelConfig(backbone="resnet18", stages=[-2, -1], projector_hidden=64, projector_dim=16)


@pytest.fixture(scope="module")
def model() -> Vito:
    torch.manual_seed(0)
    return Vito(TINY, LossConfig(temperature=0.1))


def test_forward_backward_trains_online_only(model: Vito) -> None:
    views = torch.randn(4, 3, 3, 32, 32)  # B=4 clips, V=3 views
    model.zero_grad(set_to_none=True)
    out = model(views)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert len(out["mask_entropy"]) == 2 and all(0 <= float(e) <= 1 for e in out["mask_entropy"])
    out["loss"].backward()
    online = [p for p in model.online.parameters()] + list(model.predictor.parameters())
    assert all(p.grad is not None for p in online)
    assert sum(float(p.grad.abs().sum()) for p in model.online.pool.parameters()) > 0  # attention MLPs learn
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())


def test_loss_is_the_multiview_objective_on_separate_views(model: Vito) -> None:
    """Batching all views together must equal running the pieces by hand, view by view (eval-mode BN)."""
    from vito.objective import multiview_info_nce

    model.eval()
    try:
        views = torch.randn(3, 3, 3, 32, 32)
        with torch.no_grad():
            loss = model(views)["loss"]
            queries = [model.predictor(model.online(views[:, v]).projection) for v in range(3)]
            keys = [model.target(views[:, v]).projection for v in range(3)]
        assert torch.allclose(loss, multiview_info_nce(queries, keys, 0.1), atol=1e-4)
    finally:
        model.train()


def test_update_target_is_an_ema_and_copies_buffers() -> None:
    torch.manual_seed(0)
    model = Vito(TINY, LossConfig())
    for t, o in zip(model.target.parameters(), model.online.parameters()):  # starts as a copy, not a view
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr()
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
        for b in model.online.buffers():
            b.add_(2)
    before = [p.clone() for p in model.target.parameters()]
    model.update_target(0.75)
    for old, new, online in zip(before, model.target.parameters(), model.online.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online)
    assert all(torch.equal(t, o) for t, o in zip(model.target.buffers(), model.online.buffers()))
    frozen = [p.clone() for p in model.target.parameters()]
    model.update_target(1.0)  # the end of the schedule: the target no longer moves
    assert all(torch.equal(t, f) for t, f in zip(model.target.parameters(), frozen))


@pytest.mark.parametrize("size", [32, 48, 80])
def test_attention_maps_any_image_size(model: Vito, size: int) -> None:
    model.eval()
    try:
        maps = model.online.attention_maps(torch.randn(2, 3, size, size))
    finally:
        model.train()
    assert [tuple(m.shape) for m in maps] == [(2, math.ceil(size / 16), math.ceil(size / 16)),
                                              (2, math.ceil(size / 32), math.ceil(size / 32))]
    assert all(torch.allclose(m.sum(dim=(1, 2)), torch.ones(2), atol=1e-5) for m in maps)


def test_average_pooling_network_and_no_predictor() -> None:
    config = ModelConfig(backbone="resnet18", stages=[-1], attention=False, predictor=False,
                         projector_hidden=32, projector_dim=8)
    model = Vito(config, LossConfig())
    assert isinstance(model.predictor, torch.nn.Identity)
    out = model.online(torch.randn(2, 3, 64, 64))
    assert out.pooled.shape == (2, 512) and out.projection.shape == (2, 8)
    assert torch.allclose(normalised_entropy(out.masks[0]), torch.tensor(1.0))
    assert isinstance(model, torch.nn.Module) and isinstance(model.online, VitoNetwork)


def test_normalised_entropy_extremes() -> None:
    peaked = torch.zeros(2, 4, 4)
    peaked[:, 1, 2] = 1.0
    assert float(normalised_entropy(peaked)) == pytest.approx(0.0, abs=1e-6)
    assert float(normalised_entropy(torch.full((2, 4, 4), 1 / 16))) == pytest.approx(1.0)


def test_same_video_clips_are_masked_unless_disabled(model: Vito) -> None:
    """``video_index`` reaches the objective; ``loss.mask_same_video=False`` is the old (unmasked) loss."""
    from vito.objective import multiview_info_nce

    views, videos = torch.randn(4, 2, 3, 32, 32), torch.tensor([3, 3, 5, 6])
    model.eval()
    try:
        with torch.no_grad():
            queries = [model.predictor(model.online(views[:, v]).projection) for v in range(2)]
            keys = [model.target(views[:, v]).projection for v in range(2)]
            masked = model(views, videos)["loss"]
            model.mask_same_video = False
            unmasked = model(views, videos)["loss"]
    finally:
        model.mask_same_video = True
        model.train()
    assert torch.allclose(masked, multiview_info_nce(queries, keys, 0.1, video_index=videos), atol=1e-4)
    assert torch.allclose(unmasked, multiview_info_nce(queries, keys, 0.1), atol=1e-4)
    assert not torch.allclose(masked, unmasked, atol=1e-3)


def test_mask_same_video_is_a_config_key_defaulting_to_true() -> None:
    from vito.config import load_config

    assert load_config("demo").loss.mask_same_video is True
    assert Vito(TINY, load_config("demo", ["loss.mask_same_video=false"]).loss).mask_same_video is False


def test_build_vito_is_a_function_of_the_config_and_its_seed() -> None:
    from vito.config import load_config
    from vito.models.vito import build_vito

    tiny = ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16"]
    first, again = build_vito(load_config("demo", tiny)), build_vito(load_config("demo", tiny))
    other = build_vito(load_config("demo", [*tiny, "train.seed=1"]))
    weights = [(name, value) for name, value in first.state_dict().items() if value.is_floating_point()]
    assert all(torch.equal(value, again.state_dict()[name]) for name, value in weights)
    assert not all(torch.equal(value, other.state_dict()[name]) for name, value in weights)
