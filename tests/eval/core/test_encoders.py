"""Every encoder kind loads and extracts; mismatching weights fail with a clear VitoError."""

from __future__ import annotations

import json

import pytest
import torch

from vito.errors import VitoError
from vito.eval.core.encoders import load_encoder
from vito.eval.core.features import cached_features
from vito.eval.core.inputs import EvalTransform
from vito.models.external import create_architecture


def _check_resnet18_features(encoder) -> None:
    images = torch.randn(2, 3, 64, 64)
    res4, res5 = encoder.feature_maps(images, [-2, -1])
    assert res4.shape == (2, 256, 4, 4) and res5.shape == (2, 512, 2, 2)
    assert encoder.embed(images).shape == (2, 512)
    assert torch.allclose(encoder.embed(images), res5.mean(dim=(2, 3)), atol=1e-5)
    assert encoder.feature_dim == 512


def _check_resnet18(encoder) -> None:
    _check_resnet18_features(encoder)
    assert encoder.attention_maps(torch.randn(1, 3, 64, 64)) is None


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_outside_encoder_with_weights_file(tmp_path, library: str) -> None:
    model = create_architecture(f"{library}:resnet18")
    weights = tmp_path / "r18.pt"
    torch.save(model.state_dict(), weights)
    encoder = load_encoder(f"{library}:resnet18", weights=weights)
    _check_resnet18(encoder)
    images = torch.randn(2, 3, 64, 64)
    assert torch.allclose(encoder.classifier(encoder.embed(images)), model.eval()(images), atol=1e-4)


def test_mismatching_weights_raise_vito_error(tmp_path) -> None:
    weights = tmp_path / "r34.pt"
    torch.save(create_architecture("timm:resnet34").state_dict(), weights)
    with pytest.raises(VitoError, match="do not fit"):
        load_encoder("timm:resnet18", weights=weights)
    with pytest.raises(VitoError):
        load_encoder(str(tmp_path / "missing-run"))


def test_exported_file_with_sidecar(tmp_path) -> None:
    state = {k: v for k, v in create_architecture("timm:resnet18").state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "backbone.pt"
    torch.save(state, path)
    (tmp_path / "backbone.pt.json").write_text(json.dumps({"library": "vito", "name": "resnet18", "format": "timm"}))
    encoder = load_encoder(path)
    _check_resnet18(encoder)
    assert encoder.classifier is None  # an exported backbone has no ImageNet head


def test_remove_stride_gives_stride_8_res4() -> None:
    encoder = load_encoder("timm:resnet18")
    encoder.remove_stride(-2)
    encoder.remove_stride(-2)  # idempotent
    assert encoder.feature_maps(torch.randn(1, 3, 64, 96), [-2])[0].shape[-2:] == (8, 12)
    assert encoder.feature_maps(torch.randn(1, 3, 64, 96), [-1])[0].shape[-2:] == (4, 6)  # res5 still strided


def _tiny_image_folder(root) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40 + i, 30), (i * 90, 20, 200 if cls == "a" else 0)).save(root / cls / f"{i}.png")


def test_cached_features_reuse_the_cache(tmp_path) -> None:
    from PIL import Image

    _tiny_image_folder(tmp_path / "data")
    encoder = load_encoder("timm:resnet18")
    first = cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=32, batch_size=3)
    assert first.features.shape == (4, 512) and first.labels.tolist() == [0, 0, 1, 1]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    again = cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=32)
    assert torch.equal(first.features, again.features)
    assert EvalTransform(32)(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_vito_checkpoint_loads_with_attention(tmp_path) -> None:
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention_hidden=8"])
    model = Vito(config.model, config.loss)
    save_checkpoint(tmp_path / "run", {"format": "vito-checkpoint/1", "step": 7, "config": config.to_dict(),
                                       "model": model.state_dict(), "optimizer": {}, "rng": {}, "data": {}})
    encoder = load_encoder(tmp_path / "run")
    _check_resnet18_features(encoder)
    images = torch.randn(2, 3, 64, 64)
    expected = model.online.eval().backbone(images)
    assert torch.allclose(encoder.feature_maps(images, [-1])[0], expected[-1], atol=1e-5)
    masks = encoder.attention_maps(images)
    assert [m.shape for m in masks] == [(2, 4, 4), (2, 2, 2)]
    assert encoder.classifier is None and "step 7" in encoder.name


def test_random_init_is_seeded_so_caches_stay_valid() -> None:
    first, second = load_encoder("timm:resnet18"), load_encoder("timm:resnet18")
    assert first.fingerprint == second.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    load_encoder("timm:resnet18")
    assert torch.equal(torch.rand(1), expected)  # the caller's random stream is left alone


def test_feature_cache_is_read_not_recomputed_and_keyed_by_weights(tmp_path, monkeypatch) -> None:
    import vito.eval.core.features as features

    _tiny_image_folder(tmp_path / "data")
    weights = tmp_path / "w.pt"
    torch.save(create_architecture("timm:resnet18").state_dict(), weights)
    encoder = load_encoder("timm:resnet18", weights=weights)
    first = cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=32)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were recomputed although they are cached")

    monkeypatch.setattr(features, "extract_features", no_extraction)
    assert torch.equal(cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=32).features,
                       first.features)
    monkeypatch.undo()
    torch.save(create_architecture("timm:resnet18").state_dict(), weights)  # other weights, same file name
    other = cached_features(load_encoder("timm:resnet18", weights=weights), tmp_path / "data", tmp_path / "cache",
                            image_size=32)
    assert not torch.equal(other.features, first.features)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_exported_file_that_does_not_fit_its_sidecar(tmp_path) -> None:
    path = tmp_path / "backbone.pt"
    torch.save(create_architecture("timm:resnet18").state_dict(), path)
    (tmp_path / "backbone.pt.json").write_text(json.dumps({"library": "vito", "name": "resnet34", "format": "timm"}))
    with pytest.raises(VitoError, match="do not fit timm:resnet34"):
        load_encoder(path)


def test_vito_checkpoint_that_does_not_fit_its_architecture(tmp_path) -> None:
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    small = ["model.projector_hidden=32", "model.projector_dim=16", "model.attention_hidden=8"]
    trained = load_config(None, ["model.backbone=resnet18", *small])
    claimed = load_config(None, ["model.backbone=resnet34", *small])
    save_checkpoint(tmp_path / "run", {"format": "vito-checkpoint/1", "step": 1, "config": claimed.to_dict(),
                                       "model": Vito(trained.model, trained.loss).state_dict(), "optimizer": {},
                                       "rng": {}, "data": {}})
    with pytest.raises(VitoError, match="does not fit model resnet34"):
        load_encoder(tmp_path / "run")


def test_cli_asks_for_weights_or_an_explicit_random_init(tmp_path, capsys) -> None:
    from vito.cli import main
    from vito.eval.core.result import read_result

    _tiny_image_folder(tmp_path / "data")
    common = ["eval", "knn", "--train", str(tmp_path / "data"), "--val", str(tmp_path / "data"), "--out",
              str(tmp_path / "out"), "--image-size", "32", "--num-workers", "0", "--device", "cpu", "--k", "2"]
    assert main([*common, "--encoder", "timm:resnet18"]) == 2
    assert "needs --weights FILE (or --random-init" in capsys.readouterr().err
    weights = tmp_path / "w.pt"
    torch.save(create_architecture("timm:resnet18").state_dict(), weights)
    assert main([*common, "--encoder", "timm:resnet18", "--weights", str(weights), "--random-init"]) == 2
    assert "--random-init is for" in capsys.readouterr().err
    assert main([*common, "--encoder", "timm:resnet18", "--random-init"]) == 0
    assert read_result(tmp_path / "out").encoder["name"] == "timm:resnet18 (random init)"


@pytest.mark.parametrize("fmt", ["timm", "torchvision", "detectron2"])
def test_files_written_by_vito_export_are_encoders(tmp_path, fmt: str) -> None:
    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito
    from vito.pretrain.export import export_backbone

    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16",
                                "model.attention_hidden=8"])
    save_checkpoint(tmp_path / "run", {"format": "vito-checkpoint/1", "step": 3, "config": config.to_dict(),
                                       "model": Vito(config.model, config.loss).state_dict(), "optimizer": {},
                                       "rng": {}, "data": {}})
    suffix = ".pkl" if fmt == "detectron2" else ".pt"  # the suffix must match the format
    exported = export_backbone(tmp_path / "run", fmt=fmt, out=tmp_path / f"backbone-{fmt}{suffix}")
    if fmt == "detectron2":
        with pytest.raises(VitoError, match="detectron2 export"):
            load_encoder(exported)
        return
    encoder, run = load_encoder(exported), load_encoder(tmp_path / "run")
    images = torch.randn(2, 3, 64, 64)
    assert torch.allclose(encoder.feature_maps(images, [-2])[0], run.feature_maps(images, [-2])[0], atol=1e-5)
    assert encoder.classifier is None  # the export's head is all zeros: not a classifier


def test_pooled_is_the_embedding_vito_trains_and_transform_is_the_evaluation_view(tmp_path) -> None:
    from PIL import Image

    from vito.config import load_config
    from vito.engine.checkpoint import save_checkpoint
    from vito.models.vito import Vito

    config = load_config(None, ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16"])
    model = Vito(config.model, config.loss)
    save_checkpoint(tmp_path / "run", {"format": "vito-checkpoint/1", "step": 1, "config": config.to_dict(),
                                       "model": model.state_dict(), "optimizer": {}, "rng": {}, "data": {}})
    encoder = load_encoder(tmp_path / "run")
    images = torch.stack([encoder.transform(Image.new("RGB", (90, 70), (40 * i, 90, 200))) for i in range(2)])
    assert images.shape == (2, 3, 224, 224)
    assert torch.equal(images[0], EvalTransform()(Image.new("RGB", (90, 70), (0, 90, 200))))
    pooled = encoder.pooled(images)
    assert pooled.shape == (2, 256 + 512)  # res4 and res5 of a ResNet-18, attention-pooled
    torch.testing.assert_close(pooled, model.online.eval()(images).pooled)
    assert encoder.embed(images).shape == (2, 512)


def test_pooled_of_an_encoder_without_vito_pooling_is_a_clear_error() -> None:
    with pytest.raises(VitoError, match=r"timm:resnet18 \(random init\) has no VITO pooling .* use embed\(images\)"):
        load_encoder("timm:resnet18").pooled(torch.zeros(1, 3, 32, 32))
