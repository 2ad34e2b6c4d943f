"""What the robustness sets share: the ImageNet classifier (its own head or a linear probe's), images in odd
modes in a labelled folder, and the command line writing a Result for two of the sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.eval.robustness.helpers import ConstantEncoder, favouring, imagenet_a_folder
from vito.errors import DataError, VitoError
from vito.eval.core.classifier import ImageNetClassifier, attach_head, imagenet_synsets
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.result import read_result
from vito.eval.robustness.imagenet_a import evaluate_imagenet_a, imagenet_a_classes


def test_own_head_runs_the_whole_architecture(tmp_path):
    """`--classifier own`: a supervised torchvision model from a local weights file gives its own logits, and
    architectures that normalise before their classifier (ConvNeXt) are not cut short at the last layer."""
    import torchvision

    from vito.eval.core.encoders import load_encoder

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    images = torch.randn(2, 3, 64, 64)
    supervised = attach_head(load_encoder("torchvision:resnet18", tmp_path / "resnet18.pth"), "own")
    with torch.no_grad():
        assert torch.allclose(supervised(images), reference(images), atol=1e-5)
        convnext = load_encoder("timm:convnext_atto")
        assert torch.allclose(ImageNetClassifier(convnext)(images), convnext.model(images), atol=1e-5)


def test_linear_head_from_vito_eval_linear(tmp_path, caplog):
    from vito.eval.probes.heads import save_linear_head

    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 1000)
    save_linear_head(tmp_path / "head.pt", linear, {"classes": imagenet_synsets()})
    model = attach_head(EncoderSpec("timm:resnet18", random_init=True, device="cpu").load(), tmp_path / "head.pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images), linear(model.encoder.embed(images)), atol=1e-5)
    assert "not the ImageNet-1k wnids" not in caplog.text
    save_linear_head(tmp_path / "renamed.pt", linear, {"classes": [f"class{i}" for i in range(1000)]})
    attach_head(model.encoder, tmp_path / "renamed.pt")
    assert "not the ImageNet-1k wnids" in caplog.text
    save_linear_head(tmp_path / "small.pt", torch.nn.Linear(512, 10))
    with pytest.raises(VitoError, match="1000 ImageNet classes"):
        attach_head(model.encoder, tmp_path / "small.pt")


def test_images_in_odd_modes_are_read_and_unreadable_ones_are_clear_errors(shared_data, tmp_path):
    from PIL import Image

    wnid = imagenet_a_folder(shared_data, tmp_path / "imagenet-a", count=1)[0]
    source = Image.open(next((tmp_path / "imagenet-a" / wnid).iterdir())).convert("RGB")
    for mode in ("L", "P", "RGBA", "CMYK", "1"):
        source.convert(mode).save(tmp_path / "imagenet-a" / wnid / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
    Image.fromarray(np.full((40, 30), 40000, dtype=np.uint16)).save(tmp_path / "imagenet-a" / wnid / "sixteen.png")
    model = ImageNetClassifier(ConstantEncoder(), favouring(imagenet_a_classes()[0][0]))
    result = evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert result.used == 7 and result.metrics["top1"] == 1.0
    (tmp_path / "imagenet-a" / wnid / "broken.jpg").write_bytes(b"not an image")
    result = evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert [Path(p).name for p, _ in result.skipped] == ["broken.jpg"] and (result.used, result.expected) == (7, 8)
    with pytest.raises(DataError, match="not found"):
        evaluate_imagenet_a(model, tmp_path / "nowhere", image_size=32)


def test_cli_writes_json_and_summary(shared_data, tmp_path):
    from vito.cli import main
    from vito.eval.probes.heads import save_linear_head

    save_linear_head(tmp_path / "head.pt", torch.nn.Linear(512, 1000))
    imagenet_a_folder(shared_data, tmp_path / "imagenet-a", count=2)
    common = ["--encoder", "timm:resnet18", "--random-init", "--classifier", str(tmp_path / "head.pt"),
              "--image-size", "32", "--device", "cpu"]
    assert main(["eval", "imagenet-a", *common, "--root", str(tmp_path / "imagenet-a"), "--out", str(tmp_path / "a")]) == 0
    assert read_result(tmp_path / "a").coverage.used == 2
    assert (tmp_path / "a" / "result.md").read_text().startswith("# imagenet-a — timm:resnet18")
    for severity in (1, 2):
        imagenet_a_folder(shared_data, tmp_path / "3dcc" / "flash" / str(severity), count=2)
    assert main(["eval", "imagenet-3dcc", *common, "--root", str(tmp_path / "3dcc"), "--clean-accuracy", "0.5",
                 "--out", str(tmp_path / "c"), "--compare", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "c").exists()  # a bad --compare fails before evaluating
    assert main(["eval", "imagenet-3dcc", *common, "--root", str(tmp_path / "3dcc"), "--clean-accuracy", "0.5",
                 "--out", str(tmp_path / "c")]) == 0
    assert "Coverage: 1 of 7 items (corruptions evaluated" in (tmp_path / "c" / "result.md").read_text()
    assert (tmp_path / "c" / "imagenet_3dcc_delta.png").stat().st_size > 1000
