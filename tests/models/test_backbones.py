"""Stage selection and weight export of timm encoders (no weights are downloaded: random initialisation)."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision

from vito.errors import VitoError
from vito.models.backbones import backbone_state_dict, create_backbone, detectron2_name


@pytest.fixture(scope="module")
def resnet50():
    return create_backbone("resnet50")


def test_resnet50_default_stages_are_res4_res5(resnet50) -> None:
    assert resnet50.stages == [3, 4] and resnet50.channels == [1024, 2048] and resnet50.reductions == [16, 32]
    maps = resnet50(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 1024, 4, 4), (1, 2048, 2, 2)]


@pytest.mark.parametrize(("stages", "channels"), [([-1], [512]), ([-2, -1], [256, 512]), ([1, 3], [64, 256])])
def test_resnet18_stage_selection(stages: list[int], channels: list[int]) -> None:
    backbone = create_backbone("resnet18", stages)
    assert backbone.channels == channels and backbone.name == "resnet18"
    maps = backbone(torch.randn(2, 3, 32, 32))
    assert [m.shape[1] for m in maps] == channels
    assert [32 // m.shape[-1] for m in maps] == backbone.reductions


def test_swin_returns_nchw() -> None:
    backbone = create_backbone("swin_tiny_patch4_window7_224", [-2, -1])
    assert backbone.channels == [384, 768]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 384, 14, 14), (1, 768, 7, 7)]
    state = backbone_state_dict(backbone, "timm")  # features_only renamed "layers.0" to "layers_0"
    with torch.device("meta"):  # strict key and shape check without paying for a second initialisation
        timm.create_model("swin_tiny_patch4_window7_224").load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize("stages", [[5], [-6], [1, 1]])
def test_bad_stages_are_user_errors(stages: list[int]) -> None:
    with pytest.raises(VitoError, match="stages"):
        create_backbone("resnet18", stages)


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(VitoError, match="no model named"):
        create_backbone("resnet_does_not_exist", [-1])


def test_timm_export_loads_strictly_with_zero_classifier(resnet50) -> None:
    state = backbone_state_dict(resnet50, "timm")
    model = timm.create_model("resnet50")
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layer3[0].conv1.weight, resnet50.body.layer3[0].conv1.weight)
    assert not model.fc.weight.any() and not model.fc.bias.any()


def test_torchvision_export_loads_strictly_and_computes_the_same(resnet50) -> None:
    model = torchvision.models.resnet50()
    model.load_state_dict(backbone_state_dict(resnet50, "torchvision"), strict=True)
    model.eval(), resnet50.eval()
    images = torch.randn(1, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(model.children())[:-2])
    assert torch.allclose(trunk(images), resnet50(images)[-1], atol=1e-5)


def test_detectron2_export_names_and_values(resnet50) -> None:
    exported = backbone_state_dict(resnet50, "detectron2")
    assert exported["__author__"] == "vito" and exported["matching_heuristics"] is True
    model = exported["model"]
    torchvision_state = backbone_state_dict(resnet50, "torchvision")
    for name in ["stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
                 "res2.0.shortcut.norm.bias", "res4.5.conv2.norm.weight", "res5.2.conv3.weight"]:
        assert name in model
    assert all(not k.startswith(("fc.", "stem.fc")) and "num_batches_tracked" not in k for k in model)
    # the mapping round-trips: undoing the renaming gives back every torchvision key with its value
    kept = {k: v for k, v in torchvision_state.items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert {_torchvision_name(k) for k in model} == set(kept)
    for name, value in model.items():
        assert (torch.from_numpy(value) == kept[_torchvision_name(name)]).all()


def _torchvision_name(d2_name: str) -> str:
    """The inverse of detectron2's renaming, written independently of the code under test."""
    key = d2_name.removeprefix("stem.")
    key = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", key)
    key = key.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    return re.sub(r"conv(\d)\.norm", r"bn\1", key)


def test_detectron2_name_examples() -> None:
    assert detectron2_name("bn1.bias") == "stem.conv1.norm.bias"
    assert detectron2_name("layer3.2.bn3.running_mean") == "res4.2.conv3.norm.running_mean"
    assert detectron2_name("layer1.0.downsample.1.weight") == "res2.0.shortcut.norm.weight"


def test_export_refuses_a_truncated_network() -> None:
    with pytest.raises(VitoError, match="cannot be exported"):
        backbone_state_dict(create_backbone("resnet18", [-2]), "timm")


def test_export_rejects_unknown_format_and_non_resnet_torchvision() -> None:
    backbone = create_backbone("resnet18", [-1])
    with pytest.raises(VitoError, match="format"):
        backbone_state_dict(backbone, "onnx")
    with pytest.raises(VitoError, match="ResNets only"):
        backbone_state_dict(create_backbone("efficientnet_b0", [-1]), "torchvision")
