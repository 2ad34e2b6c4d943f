"""ImageNet-A slicing, Vid-Robust pm-k and 3DCC Δ-accuracy against the spec, plus small end-to-end runs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vito.errors import DataError
from vito.eval.core.base import read_result, write_result
from vito.eval.core.encoders import EncoderSpec
from vito.eval.robustness import imagenet_3dcc as robustness


def test_vector_5a_imagenet_a_slicing():
    logits = torch.zeros(1, 1000)
    logits[0, 1], logits[0, 6], logits[0, 11] = 5.0, 3.0, 4.0
    assert logits.argmax().item() == 1  # not an ImageNet-A class
    assert robustness.imagenet_a_predictions(logits).tolist() == [1]  # subset position 1 = ImageNet class 11


def test_imagenet_a_class_list_equals_the_shared_table(shared_data):
    indices, wnids = robustness.imagenet_a_classes()
    with open(shared_data / "imagenet" / "imagenet_a_classes.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["imagenet_a_index"]) for r in rows] == list(range(200))
    assert [int(r["imagenet_1k_index"]) for r in rows] == indices
    assert [r["wnid"] for r in rows] == wnids
    assert [robustness.imagenet_synsets()[i] for i in indices] == wnids


def test_vector_4a_superclass_uses_max_of_member_logits(shared_data):
    meta = robustness.VidRobustMetadata(shared_data / "imagenet-vid-robust")
    logits = torch.zeros(1, 1000)
    logits[0, 404], logits[0, 207] = 2.0, 3.0
    assert robustness.superclass_predictions(logits, meta.members).tolist() == [8]
    assert len(meta.members) == 30 and sum(len(m) for m in meta.members) == 288


def test_vector_4b_pm_k():
    labels = {"a1": [4], "n1": [4], "n2": [4, 8], "a2": [8], "n3": [8], "a3": [27]}
    pmsets = {"a1": ["n1", "n2"], "a2": ["n3"], "a3": []}
    predictions = {"a1": 4, "n1": 4, "n2": 8, "a2": 8, "n3": 11, "a3": 27}
    scores = robustness.pm_k_accuracy(predictions, labels, pmsets)
    assert scores["pm0"] == 1.0 and scores["pm10"] == pytest.approx(2 / 3)


def test_pm_k_on_the_real_metadata_with_made_up_predictions(shared_data):
    meta = robustness.VidRobustMetadata(shared_data / "imagenet-vid-robust")
    predictions = {frame: classes[0] for frame, classes in meta.labels.items()}
    assert robustness.pm_k_accuracy(predictions, meta.labels, meta.pmsets) == {"pm0": 1.0, "pm10": 1.0, "anchors": 1109}
    anchors = sorted(a for a, n in meta.pmsets.items() if n)
    wrong = lambda frame: next(c for c in range(30) if c not in meta.labels[frame])  # noqa: E731
    predictions[meta.pmsets[anchors[0]][0]] = wrong(meta.pmsets[anchors[0]][0])  # a neighbour fails: pm10 only
    predictions[anchors[1]] = wrong(anchors[1])  # an anchor fails: both
    scores = robustness.pm_k_accuracy(predictions, meta.labels, meta.pmsets)
    assert scores["pm0"] == pytest.approx(1108 / 1109)
    assert scores["pm10"] == pytest.approx(1107 / 1109)


def test_vector_6a_delta_accuracy():
    accuracy = {"near_focus": dict(zip(range(1, 6), [0.70, 0.66, 0.62, 0.58, 0.54]))}
    delta = robustness.delta_accuracy(0.76, accuracy)
    assert delta["per_corruption"]["near_focus"] == pytest.approx(0.14)
    assert delta["mean"] == pytest.approx(0.14)
    assert delta["per_severity"][5] == pytest.approx(0.22)
    two = robustness.delta_accuracy(0.76, {**accuracy, "fog_3d": dict(zip(range(1, 6), [0.76] * 5))})
    assert two["per_severity"][1] == pytest.approx((0.06 + 0.0) / 2) and two["mean"] == pytest.approx(0.07)


class _ConstantEncoder(torch.nn.Module):
    """A stand-in encoder whose embedding is the mean colour: enough to drive the pipeline deterministically."""

    name = "constant"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def _favouring(index: int) -> torch.nn.Linear:
    head = torch.nn.Linear(3, 1000)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[index] = 1.0
    return head


def test_vid_robust_end_to_end_on_the_real_frames(shared_data):
    turtle = robustness.ImageNetClassifier(_ConstantEncoder(), _favouring(35))  # a turtle class: superclass 26
    result = robustness.evaluate_vid_robust(turtle, shared_data / "imagenet-vid-robust", image_size=32, batch_size=21)
    assert result.used == 1 and "21 frames" in result.note and result.expected - result.used == 1108
    assert (result.metrics["pm0"], result.metrics["pm10"]) == (1.0, 1.0)
    dog = robustness.ImageNetClassifier(_ConstantEncoder(), _favouring(207))
    result = robustness.evaluate_vid_robust(dog, shared_data / "imagenet-vid-robust", image_size=32, batch_size=21)
    assert (result.metrics["pm0"], result.metrics["pm10"]) == (0.0, 0.0)


def _imagenet_a_folder(shared_data: Path, root: Path, count: int = 3) -> list[str]:
    _, wnids = robustness.imagenet_a_classes()
    for wnid in wnids[:count]:
        (root / wnid).mkdir(parents=True)
        source = next((shared_data / "imagenet-sample-images").glob(f"{wnid}_*"))
        shutil.copy(source, root / wnid / source.name)
    return wnids[:count]


def test_imagenet_a_end_to_end_on_real_images(shared_data, tmp_path):
    indices, _ = robustness.imagenet_a_classes()
    _imagenet_a_folder(shared_data, tmp_path / "imagenet-a")
    model = robustness.ImageNetClassifier(_ConstantEncoder(), _favouring(indices[1]))
    result = robustness.evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert result.used == 3 and result.metrics["top1"] == pytest.approx(1 / 3)
    (tmp_path / "imagenet-a" / "not-a-wnid").mkdir()
    with pytest.raises(DataError, match="not-a-wnid"):
        robustness.evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)


def test_3dcc_end_to_end_on_a_made_up_layout(shared_data, tmp_path):
    for corruption in ("near_focus", "fog_3d"):
        for severity in (1, 2):
            _imagenet_a_folder(shared_data, tmp_path / "3dcc" / corruption / str(severity), count=2)
    first = robustness.imagenet_a_classes()[0][0]
    model = robustness.ImageNetClassifier(_ConstantEncoder(), _favouring(first))
    result = robustness.evaluate_3dcc(model, tmp_path / "3dcc", clean=0.9, image_size=32)
    assert result.extra["accuracy"] == {"near_focus": {1: 0.5, 2: 0.5}, "fog_3d": {1: 0.5, 2: 0.5}}
    assert result.metrics["delta_accuracy"] == pytest.approx(0.4)
    assert "view_jitter" in result.extra["missing_corruptions"] and "flash" in result.extra["missing_corruptions"]
    written = robustness.scored_result("imagenet-3dcc", result, {}, {})
    written.encoder = {"name": "a"}
    write_result(written, tmp_path / "out")
    figure = robustness.plot_3dcc([tmp_path / "out", tmp_path / "out" / "result.json"], tmp_path / "out" / "fig.png")
    assert figure.stat().st_size > 1000


def test_own_head_runs_the_whole_architecture(tmp_path):
    """`--classifier own`: a supervised torchvision model from a local weights file gives its own logits, and
    architectures that normalise before their classifier (ConvNeXt) are not cut short at the last layer."""
    import torchvision

    from vito.eval.core.encoders import load_encoder

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    images = torch.randn(2, 3, 64, 64)
    supervised = robustness.attach_head(load_encoder("torchvision:resnet18", tmp_path / "resnet18.pth"), "own")
    with torch.no_grad():
        assert torch.allclose(supervised(images), reference(images), atol=1e-5)
        convnext = load_encoder("timm:convnext_atto")
        assert torch.allclose(robustness.ImageNetClassifier(convnext)(images), convnext.model(images), atol=1e-5)


def test_linear_head_from_vito_eval_linear(tmp_path, caplog):
    from vito.eval.probes.heads import save_linear_head

    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 1000)
    save_linear_head(tmp_path / "head.pt", linear, {"classes": robustness.imagenet_synsets()})
    model = robustness.attach_head(EncoderSpec("timm:resnet18", random_init=True, device="cpu").load(), tmp_path / "head.pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images), linear(model.encoder.embed(images)), atol=1e-5)
    assert "not the ImageNet-1k wnids" not in caplog.text
    save_linear_head(tmp_path / "renamed.pt", linear, {"classes": [f"class{i}" for i in range(1000)]})
    robustness.attach_head(model.encoder, tmp_path / "renamed.pt")
    assert "not the ImageNet-1k wnids" in caplog.text
    save_linear_head(tmp_path / "small.pt", torch.nn.Linear(512, 10))
    with pytest.raises(robustness.VitoError, match="1000 ImageNet classes"):
        robustness.attach_head(model.encoder, tmp_path / "small.pt")


def test_images_in_odd_modes_are_read_and_unreadable_ones_are_clear_errors(shared_data, tmp_path):
    from PIL import Image

    wnid = _imagenet_a_folder(shared_data, tmp_path / "imagenet-a", count=1)[0]
    source = Image.open(next((tmp_path / "imagenet-a" / wnid).iterdir())).convert("RGB")
    for mode in ("L", "P", "RGBA", "CMYK", "1"):
        source.convert(mode).save(tmp_path / "imagenet-a" / wnid / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
    Image.fromarray(np.full((40, 30), 40000, dtype=np.uint16)).save(tmp_path / "imagenet-a" / wnid / "sixteen.png")
    model = robustness.ImageNetClassifier(_ConstantEncoder(), _favouring(robustness.imagenet_a_classes()[0][0]))
    result = robustness.evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert result.used == 7 and result.metrics["top1"] == 1.0
    (tmp_path / "imagenet-a" / wnid / "broken.jpg").write_bytes(b"not an image")
    result = robustness.evaluate_imagenet_a(model, tmp_path / "imagenet-a", image_size=32)
    assert [Path(p).name for p, _ in result.skipped] == ["broken.jpg"] and (result.used, result.expected) == (7, 8)
    with pytest.raises(DataError, match="not found"):
        robustness.evaluate_imagenet_a(model, tmp_path / "nowhere", image_size=32)


def test_cli_writes_json_and_summary(shared_data, tmp_path):
    from vito.cli import main
    from vito.eval.probes.heads import save_linear_head

    save_linear_head(tmp_path / "head.pt", torch.nn.Linear(512, 1000))
    _imagenet_a_folder(shared_data, tmp_path / "imagenet-a", count=2)
    common = ["--encoder", "timm:resnet18", "--random-init", "--classifier", str(tmp_path / "head.pt"),
              "--image-size", "32", "--device", "cpu"]
    assert main(["eval", "imagenet-a", *common, "--root", str(tmp_path / "imagenet-a"), "--out", str(tmp_path / "a")]) == 0
    assert read_result(tmp_path / "a").coverage.used == 2
    assert (tmp_path / "a" / "result.md").read_text().startswith("# imagenet-a — timm:resnet18")
    for severity in (1, 2):
        _imagenet_a_folder(shared_data, tmp_path / "3dcc" / "flash" / str(severity), count=2)
    assert main(["eval", "imagenet-3dcc", *common, "--root", str(tmp_path / "3dcc"), "--clean-accuracy", "0.5",
                 "--out", str(tmp_path / "c"), "--compare", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "c").exists()  # a bad --compare fails before evaluating
    assert main(["eval", "imagenet-3dcc", *common, "--root", str(tmp_path / "3dcc"), "--clean-accuracy", "0.5",
                 "--out", str(tmp_path / "c")]) == 0
    assert "Coverage: 1 of 7 items (corruptions evaluated" in (tmp_path / "c" / "result.md").read_text()
    assert (tmp_path / "c" / "imagenet_3dcc_delta.png").stat().st_size > 1000
