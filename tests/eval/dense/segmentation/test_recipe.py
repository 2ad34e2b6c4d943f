"""Segmentation fine-tunes end to end on the shared VOC and ADE20K images (ResNet-18, small crops, few steps); bad
training data stops the fine-tune in the main process with one line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from tests.eval.dense.segmentation.layouts import VOC_IDS, build_ade20k, build_voc, tiny_voc
from tests.helpers import free_port, tensors_equal
from vito.engine import distributed
from vito.engine.finetune import FinetuneSpec, finetune
from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.encoders import load_encoder
from vito.eval.core.registry import settings_from_mapping
from vito.eval.core.running import run_evaluation
from vito.eval.dense.segmentation.augment import SegmentationBatches, TrainAugment
from vito.eval.dense.segmentation.data import open_dataset
from vito.eval.dense.segmentation.recipe import (
    PROTOCOLS,
    build_model,
    global_mean_cross_entropy,
    learning_rate,
    predict_image,
    segmentation_loss,
)
from vito.eval.dense.segmentation.segment import Segment, protocol_for

CPU = distributed.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
RESNET18 = EncoderSpec("timm:resnet18", random_init=True, device="cpu")


def _voc(shared: Path, tmp: Path) -> Path:
    return build_voc(shared, tmp, splits={"val": VOC_IDS, "trainaug": VOC_IDS})


def _settings(root: Path, dataset: str = "voc", **extra):
    values = {"dataset": dataset, "root": root, "iters": 2, "lrs": [0.01], "seeds": [0], "batch_size": 2,
              "crop_size": 65, "num_workers": 0, "checkpoint_every": 1, "pictures": 2, **extra}
    return settings_from_mapping(Segment, values)


def test_voc_fine_tune_writes_scores_predictions_pictures_and_is_reused(shared_data: Path, tmp_path: Path) -> None:
    root = _voc(shared_data, tmp_path)
    out = tmp_path / "out"
    result = run_evaluation("segment", _settings(root), out, RESNET18)
    run = out / "runs" / "lr0.01_seed0"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "tb").is_dir() and (run / "config.yaml").is_file()
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["format"] == "vito-segment/1" and checkpoint["step"] == 2
    for image_id in VOC_IDS:  # predictions at the original size, scoreable by the scoring-only mode
        with Image.open(run / "predictions" / f"{image_id}.png") as png, \
                Image.open(root / "VOC2012" / "JPEGImages" / f"{image_id}.jpg") as jpg:
            assert png.mode == "P" and png.size == jpg.size
    assert [Path(p).name for p in result.pictures] == [f"{i}.png" for i in VOC_IDS]
    assert all((out / p).is_file() for p in result.pictures)
    data = json.loads((out / "result.json").read_text())
    assert 0.0 <= data["metrics"]["mIoU"]["value"] <= 1.0 and data["metrics"]["best_lr"]["value"] == 0.01
    assert data["coverage"]["used"] == 2 and data["tables"]["sweep"][0]["reused"] is False
    assert data["settings"]["protocol"]["head"] == "fcn" and data["encoder"]["spec"] == "timm:resnet18"
    rescored = run_evaluation("segment", settings_from_mapping(
        Segment, {"dataset": "voc", "root": root, "predictions": run / "predictions"}), tmp_path / "rescored")
    assert rescored.metrics["mIoU"].value == pytest.approx(result.metrics["mIoU"].value, abs=1e-12)

    again = run_evaluation("segment", _settings(root), out, RESNET18)  # same settings: reused, not retrained
    assert again.tables["sweep"][0]["reused"] is True
    assert again.metrics["mIoU"].value == result.metrics["mIoU"].value
    with pytest.raises(VitoError, match="different settings.*batch_size.*--overwrite"):
        run_evaluation("segment", _settings(root, batch_size=4), out, RESNET18)


def test_training_images_that_cannot_be_read_flag_the_result_partial(shared_data: Path, tmp_path: Path) -> None:
    """The val images all score, but the model trained without some of its training set: say so."""
    root = build_voc(shared_data, tmp_path, splits={"val": VOC_IDS, "trainaug": (*VOC_IDS, "2099_000001")})
    base = root / "VOC2012"
    (base / "JPEGImages" / "2099_000001.jpg").write_bytes(b"not a jpeg")
    shutil.copy(base / "SegmentationClass" / f"{VOC_IDS[0]}.png", base / "SegmentationClass" / "2099_000001.png")
    result = run_evaluation("segment", _settings(root), tmp_path / "out", RESNET18)
    assert result.coverage.used == result.coverage.expected == len(VOC_IDS)
    assert result.coverage.training_skipped == 1 and result.coverage.partial
    page = (tmp_path / "out" / "result.md").read_text()
    assert "1 training items missing or unreadable" in page and "PARTIAL" in page
    assert json.loads((tmp_path / "out" / "result.json").read_text())["coverage"]["partial"] is True


def test_ade20k_upernet_fine_tune_with_aux_head(shared_data: Path, tmp_path: Path) -> None:
    base = build_ade20k(shared_data, tmp_path, folders=("training", "validation"))
    settings = _settings(base, dataset="ade20k", crop_size=32, checkpoint_every=100)
    result = run_evaluation("segment", settings, tmp_path / "out", RESNET18)
    assert {"mIoU", "devkit_mIoU", "aAcc", "mAcc", "mIoU_sd"} <= set(result.metrics)
    assert result.metrics["mIoU_sd"].value is None  # one seed: undefined, not 0
    sd_label = result.metrics["devkit_mIoU_sd"].label  # named as its metric is, not by its key
    assert sd_label == "mIoU over all 150 classes (official ADE20K devkit): sd over 1 seed"  # never "1 seeds"
    assert result.settings["protocol"]["head"] == "upernet" and tuple(result.settings["protocol"]["test_size"]) == (128, 32)
    lines = [json.loads(line) for line in (tmp_path / "out/runs/lr0.01_seed0/metrics.jsonl").read_text().splitlines()]
    assert {"loss", "decode", "aux"} <= set(lines[-1])  # the auxiliary FCN head is trained with weight 0.4
    assert lines[-1]["loss"] == pytest.approx(lines[-1]["decode"] + 0.4 * lines[-1]["aux"], rel=1e-5)
    with Image.open(tmp_path / "out/runs/lr0.01_seed0/predictions/ADE_val_00000003.png") as png:
        assert png.size == (400, 300)
    assert result.coverage.used == 3


def _voc_job(root: Path, run_dir: Path, stop_at: int | None = None, resume: bool = False):
    """The fine-tune of `vito eval segment` (model, loss, data, schedule), 3 steps, optionally stopped."""
    protocol = protocol_for(_settings(root, crop_size=49, iters=3))
    train = open_dataset("voc", root, "trainaug")
    torch.manual_seed(0)
    model = build_model(load_encoder("timm:resnet18"), protocol, 21)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    calls = []

    def loss(net, batch):
        calls.append(1)
        if len(calls) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return segmentation_loss(net, batch)

    spec = FinetuneSpec("vito-segment/1", 3, {"crop": 49}, checkpoint_every=100)
    outcome = finetune(model, loss, optimizer, lambda s: learning_rate(s, 0.01, protocol, 3),
                       lambda start: iter(SegmentationBatches(train, protocol.augment, 0, 2, start_step=start)),
                       run_dir, spec, CPU, resume=resume)
    return outcome, model


def test_stopped_segmentation_fine_tune_resumes_identically_on_cpu(shared_data: Path, tmp_path: Path) -> None:
    root = _voc(shared_data, tmp_path)
    _, reference = _voc_job(root, tmp_path / "whole")
    stopped, _ = _voc_job(root, tmp_path / "run", stop_at=1)
    assert stopped.stopped_by == "SIGTERM" and stopped.step == 1
    resumed, model = _voc_job(root, tmp_path / "run", resume=True)
    assert resumed.finished and resumed.step == 3
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_dilated_backbone_keeps_stride_16_and_the_head_matches_the_protocol() -> None:
    encoder = load_encoder("timm:resnet18")
    model = build_model(encoder, PROTOCOLS["voc"], 21)
    assert model.backbone.dilation == 2 and all(p.requires_grad for p in model.parameters())
    assert all(not p.requires_grad for p in encoder.parameters())  # the frozen encoder is untouched
    out = model.eval()(torch.zeros(1, 3, 64, 80))["logits"]
    assert out.shape == (1, 21, 64, 80)
    assert model.backbone(torch.zeros(1, 3, 64, 80))[-1].shape[-2:] == (4, 5)  # res5 at stride 16
    convs = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.dilation[0], c.kernel_size[0]) for c in convs] == [(256, 6, 3), (256, 6, 3), (21, 1, 1)]
    assert learning_rate(69, 0.1, PROTOCOLS["voc"], 100) == 0.1
    assert learning_rate(70, 0.1, PROTOCOLS["voc"], 100) == pytest.approx(0.01)
    assert learning_rate(90, 0.1, PROTOCOLS["voc"], 100) == pytest.approx(0.001)
    assert learning_rate(0, 0.01, PROTOCOLS["ade20k"], 100) == pytest.approx(0.01)
    assert learning_rate(100, 0.01, PROTOCOLS["ade20k"], 100) == pytest.approx(1e-4)
    assert PROTOCOLS["voc"].lrs == pytest.approx((1e-3, 10 ** -2.5, 1e-2, 10 ** -1.5, 1e-1))


def test_augment_crop_pads_with_ignore_and_is_deterministic() -> None:
    augment = TrainAugment(crop=40, ratio_range=(0.5, 0.5))
    image = np.full((30, 20, 3), 200, dtype=np.uint8)
    label = np.ones((30, 20), dtype=np.int64)
    a = augment(image, label, np.random.default_rng(1))
    b = augment(image, label, np.random.default_rng(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 40, 40) and a[1].shape == (40, 40)
    assert (a[1][:15, :10] == 1).all() and (a[1][15:] == 255).all() and (a[0][:, 15:] == 0).all()


# --------------------------------------------------------------------------------------------------
# DDP: 2 gloo processes = 1 process at the same global batch


def _first_step(root: Path, rank: int, world: int) -> tuple[float, dict[str, torch.Tensor]]:
    protocol = protocol_for(_settings(root, crop_size=49))
    train = open_dataset("voc", root, "trainaug")
    context = distributed.Context(rank, world, rank, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(load_encoder("timm:resnet18"), protocol, 21)
    wrapped = distributed.wrap_for_training(model, context).train()
    batch = SegmentationBatches(train, protocol.augment, 0, 4, rank, world).batch(0)
    loss = segmentation_loss(wrapped, batch)["loss"]
    loss.backward()
    total = distributed.mean_over_processes(loss.detach().reshape(1))  # each process holds its part x K
    return float(total), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup("cpu")
    try:
        loss, grads = _first_step(Path(root), rank, world)
        if rank == 0:
            torch.save({"loss": loss, "grads": grads}, out)
    finally:
        distributed.cleanup()


@pytest.mark.ddp
def test_two_gloo_processes_match_one_process(shared_data: Path, tmp_path: Path) -> None:
    root = _voc(shared_data, tmp_path)
    single_loss, single_grads = _first_step(root, 0, 1)
    mp.spawn(_ddp_worker, args=(2, free_port(), str(root), str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["loss"] == pytest.approx(single_loss, rel=1e-5)
    assert set(ddp["grads"]) == set(single_grads)
    for name, grad in single_grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_stopped_fine_tune_exits_with_128_plus_the_signal(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    from vito import cli
    from vito.engine.finetune import FinetuneStopped
    from vito.eval.dense.segmentation import segment

    def stopped(*args, **kwargs):
        raise FinetuneStopped("stopped by SIGTERM after step 1; continue with --resume", "SIGTERM")

    monkeypatch.setattr(segment, "run_sweep", stopped)
    argv = ["eval", "segment", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--dataset", "voc",
            "--root", str(_voc(shared_data, tmp_path)), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 143
    assert not (tmp_path / "out" / "result.json").exists()


def test_a_swin_backbone_predicts_images_of_any_size_with_upernet() -> None:
    """timm transformers are built for any input size; test images whose sides are no multiple of the patch
    size (ADE20K's 2048x512 fit gives such sides) are padded to the next multiple and cut back."""
    swin = load_encoder("timm:swin_tiny_patch4_window7_224")
    model = build_model(swin, PROTOCOLS["ade20k"], num_classes=150).eval()
    assert model.backbone.input_multiple == 4
    assert build_model(load_encoder("timm:resnet18"), PROTOCOLS["ade20k"], 150).backbone.input_multiple == 1
    protocol = dataclasses.replace(PROTOCOLS["ade20k"], test_size=(90, 45))
    image = np.random.default_rng(0).integers(0, 256, (50, 67, 3), dtype=np.uint8)
    prediction = predict_image(model, image, protocol, torch.device("cpu"), "fp32")
    assert prediction.shape == (50, 67) and 0 <= prediction.min() and prediction.max() < 150


def test_sigterm_to_the_process_group_with_workers_then_resume_equals_an_uninterrupted_fine_tune(
        shared_data: Path, tmp_path: Path) -> None:
    """What SLURM and Kubernetes do: SIGTERM to `vito eval segment` and its 2 DataLoader workers at once. The
    fine-tune checkpoints the step it finished, exits 143, and `--resume` ends with the weights, optimizer and
    RNG states of a run that was never stopped, and the same scores."""
    root = _voc(shared_data, tmp_path)
    command = [sys.executable, "-m", "vito", "eval", "segment", "--encoder", "timm:resnet18", "--random-init",
               "--dataset", "voc", "--root", str(root), "--iters", "40", "--lrs", "0.01", "--seeds", "0",
               "--batch-size", "2", "--crop-size", "65", "--device", "cpu", "--num-workers", "2",
               "--checkpoint-every", "100"]
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "stopped"
    run = subprocess.Popen([*command, "--out", str(out)], start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    metrics = out / "runs" / "lr0.01_seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and run.poll() is None:
        assert time.monotonic() < deadline, "the fine-tune logged nothing"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGTERM)  # the whole group: the main process and its DataLoader workers
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 143, stderr[-2000:]
    stopped_at = int(re.search(r"stopped by SIGTERM after step (\d+) \(checkpoint written\)", stderr).group(1))
    assert 10 <= stopped_at < 40

    resumed = subprocess.run([*command, "--out", str(out), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = [torch.load(folder / "runs/lr0.01_seed0/checkpoints/last.pt", weights_only=True)
             for folder in (tmp_path / "whole", out)]
    assert final[0]["step"] == final[1]["step"] == 40
    for part in ("model", "optimizer", "rng"):
        tensors_equal(final[0][part], final[1][part], part)
    scores = [json.loads((folder / "result.json").read_text())["metrics"] for folder in (tmp_path / "whole", out)]
    assert scores[0] == scores[1]


@pytest.mark.parametrize("fault", ["labels outside the classes", "no readable image"])
def test_segment_finetune_bad_training_data_stops_in_the_main_process(tmp_path: Path, fault: str) -> None:
    """Raised in a DataLoader worker, the DataError came wrapped in the worker's traceback and the process hung at
    exit (the worker ignores SIGTERM); the batch now carries it and the loss raises it as one line."""
    root = tiny_voc(tmp_path)
    if fault == "labels outside the classes":
        Image.fromarray(np.full((3, 4), 40, np.uint8), "L").save(root / "SegmentationClass" / "a.png")
        (root / "ImageSets/Segmentation/val.txt").write_text("a\n")
    else:
        for i in ("a", "b"):
            (root / "JPEGImages" / f"{i}.jpg").write_bytes(b"")
    batch = SegmentationBatches(open_dataset("voc", root, "val"), TrainAugment(crop=4), 0, 2).batch(0)
    expected = "a.png: ground-truth values \\[40\\]" if fault.startswith("labels") else "no image of voc val is readable"
    assert "images" not in batch and batch["step"] == 0
    with pytest.raises(DataError, match=expected):
        segmentation_loss(lambda images: pytest.fail("the model must not run"), batch)


def test_a_damaged_scores_file_of_a_finished_fine_tune_is_scored_again(shared_data: Path, tmp_path: Path,
                                                                        capsys) -> None:
    root = _voc(shared_data, tmp_path)
    out = tmp_path / "out"
    first = run_evaluation("segment", _settings(root), out, RESNET18)
    scores = out / "runs" / "lr0.01_seed0" / "scores.json"
    scores.write_text(scores.read_text()[: len(scores.read_text()) // 2])  # cut off, as a full disk leaves it
    again = run_evaluation("segment", _settings(root), out, RESNET18)  # reused weights, predictions scored again
    assert again.tables["sweep"][0]["reused"] is True
    assert again.metrics["mIoU"].value == first.metrics["mIoU"].value
    assert "scores.json cannot be read" in capsys.readouterr().err and json.loads(scores.read_text())["areas"]


def test_loss_averages_over_all_pixels_for_ade20k_and_labelled_pixels_for_voc() -> None:
    """Three pixels, two classes: logits (0, log 3) with label 0, anything with label 255, (log 3, 0) with label 1.
    Each labelled pixel costs log 4, so mmseg's mean over all pixels (avg_non_ignore=False, ADE20K's default) is
    2 log 4 / 3 and the mean over labelled pixels (PyTorch's, VOC's default) log 4."""
    logits = torch.tensor([[0.0, 5.0, math.log(3)], [math.log(3), -2.0, 0.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[[0, 255, 1]]])
    assert global_mean_cross_entropy(logits, labels, "all_pixels").item() == pytest.approx(2 * math.log(4) / 3)
    assert global_mean_cross_entropy(logits, labels, "labelled_pixels").item() == pytest.approx(math.log(4))
    assert (PROTOCOLS["ade20k"].loss_average, PROTOCOLS["voc"].loss_average) == ("all_pixels", "labelled_pixels")
    chosen = protocol_for(_settings(Path("."), "ade20k", loss_average="labelled_pixels"))
    assert chosen.loss_average == "labelled_pixels"
