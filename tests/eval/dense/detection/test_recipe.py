"""Detector fine-tuning end to end on real COCO images (small size, CPU; FCOS* and plain FCOS), plus its pieces:
views, schedule, batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection.fcos import FCOSHead

from vito.engine.checkpoint import load_checkpoint
from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.encoders import load_encoder
from vito.eval.core.registry import get, settings_from_mapping
from vito.eval.core.running import run_evaluation
from vito.eval.dense.detection.data import DetectionImages, load_annotations
from vito.eval.dense.detection.metrics import load_results, score_detections
from vito.eval.dense.detection.model import GlobalFCOSHead
from vito.eval.dense.detection.recipe import (
    CHECKPOINT_FORMAT,
    DetectionBatches,
    FinetunePlan,
    as_float,
    build_detector,
    detection_loss,
    lr_factor,
    plan_steps,
)
from vito.eval.dense.detection.settings import DetectSettings
from vito.eval.dense.detection.transforms import boxes_to_original, eval_view, train_view

CANVAS = (96, 128)
ATSS_ONLY = 10**9  # an alignment_start no step reaches


@pytest.fixture(scope="module")
def coco(shared_data: Path) -> Path:
    return shared_data / "detection" / "coco"


def _plan_settings(**values) -> DetectSettings:
    """Settings for a fine-tune built by hand (no annotation file is read from them)."""
    return DetectSettings(dataset="coco", val_ann=Path("unused"), weight_decay=1e-4, fpn_channels=32, **values)


def _subset_file(coco: Path, path: Path, count: int, skip: int = 0) -> Path:
    data = json.loads((coco / "instances_train2017_overlap43.json").read_text())
    keep = {i["id"] for i in data["images"][skip: skip + count]}
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path.write_text(json.dumps(data))
    return path


def _settings(coco: Path, tmp_path: Path, **extra):
    values = dict(dataset="coco", train_ann=_subset_file(coco, tmp_path / "train.json", 4),
                  val_ann=_subset_file(coco, tmp_path / "val.json", 3, skip=4), images=coco / "images",
                  resolution=list(CANVAS), fpn_channels=32, batch_size=4, base_lr=0.032, max_steps=6, seeds=[0],
                  num_workers=0, eval_batch_size=3, pictures=2, log_every=1, flip=False)
    values.update(extra)
    return settings_from_mapping(get("detect"), values)


def test_finetune_end_to_end(coco: Path, tmp_path: Path) -> None:
    """FCOS* (the default), a few steps on 4 real images (step 0 assigned by ATSS, steps 1-5 by task alignment):
    the loss on a fixed batch falls, results score, files are written, reuse."""
    out = tmp_path / "out"
    spec = EncoderSpec("torchvision:resnet18", random_init=True, device="cpu")
    settings = _settings(coco, tmp_path)
    result = run_evaluation("detect", settings, out, spec)

    assert [k for k in result.metrics if not k.endswith("_sd")] == ["AP", "AP50", "AP75", "APs", "APm", "APl",
                                                                      "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert result.metrics["AP_sd"].value is None  # one seed
    run = out / "seed_0"
    val = load_annotations(tmp_path / "val.json", "coco")
    detections = load_results(run / "detections.json", val, "bbox")  # the COCO results format, checked
    assert detections and score_detections(val, detections, "bbox").metrics == {
        k: m.value for k, m in result.metrics.items() if not k.endswith("_sd")}
    assert result.coverage.used == result.coverage.expected == 3
    assert len(result.pictures) == 2 and all((out / p).is_file() for p in result.pictures)
    assert list((run / "tb").iterdir())
    state = load_checkpoint(run, expected_format=CHECKPOINT_FORMAT)
    assert state["step"] == 6
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, 7))

    # the loss on a fixed batch of the train images, before and after the 6 steps, with fixed targets: ATSS's
    # (task-aligned targets move with the predictions: t-hat grows as the boxes improve, and so can the loss)
    train = load_annotations(tmp_path / "train.json", "coco")
    plan = FinetunePlan(_plan_settings(resolution=CANVAS, batch_size=4, flip=False), seed=0, steps=6, warmup_steps=0,
                        lr=1e-3)
    batch = DetectionBatches(DetectionImages(train, coco / "images", train=True, canvas=CANVAS, seed=0, flip=False),
                             4, seed=0, start=0).batch(0)
    model = build_detector(load_encoder("torchvision:resnet18"), len(train.categories), plan).train()
    with torch.no_grad():
        before = float(detection_loss(model, batch, alignment_start=ATSS_ONLY)["loss"])
        model.load_state_dict(state["model"])
        after = float(detection_loss(model, batch, alignment_start=ATSS_ONLY)["loss"])
    assert after < before - 0.05, (before, after)

    # the same command again reuses the finished fine-tune; other settings are refused without --overwrite
    again = run_evaluation("detect", settings, out, spec)
    assert again.tables["per seed"][0]["reused"] is True
    assert again.metrics["AP"].value == result.metrics["AP"].value
    with pytest.raises(VitoError, match="different settings"):
        run_evaluation("detect", _settings(coco, tmp_path, weight_decay=0.01), out, spec)
    with pytest.raises(VitoError, match="different settings"):
        run_evaluation("detect", _settings(coco, tmp_path, head="fcos"), out, spec)


def test_finetune_needs_its_inputs(coco: Path, tmp_path: Path) -> None:
    spec = EncoderSpec("torchvision:resnet18", random_init=True, device="cpu")
    with pytest.raises(VitoError, match="needs --images and --train-ann"):
        run_evaluation("detect", settings_from_mapping(get("detect"), {
            "dataset": "coco", "val_ann": coco / "instances_train2017_overlap43.json"}), tmp_path / "o", spec)
    with pytest.raises(VitoError, match="not both"):
        run_evaluation("detect", _settings(coco, tmp_path, predictions=tmp_path / "x.json"), tmp_path / "o", spec)


def test_an_unreadable_training_image_flags_the_result_partial(coco: Path, tmp_path: Path) -> None:
    """Every val image scores, but the detector (plain FCOS: its end-to-end run) trained without one of its 4
    images: the Result says so."""
    folder = tmp_path / "images"
    folder.mkdir()
    for image in (coco / "images").iterdir():
        (folder / image.name).symlink_to(image)
    settings = _settings(coco, tmp_path, images=folder, max_steps=1, head="fcos")
    first = load_annotations(tmp_path / "train.json", "coco").image_ids[0]
    (folder / f"{first:012d}.jpg").unlink()
    (folder / f"{first:012d}.jpg").write_bytes(b"not a jpeg")
    result = run_evaluation("detect", settings, tmp_path / "out",
                            EncoderSpec("torchvision:resnet18", random_init=True, device="cpu"))
    assert result.settings["head"] == "fcos" and "head" not in load_checkpoint(
        tmp_path / "out" / "seed_0", expected_format=CHECKPOINT_FORMAT)["config"]
    assert result.coverage.used == result.coverage.expected == 3
    assert result.coverage.training_skipped == 1 and result.coverage.partial
    assert "1 training items missing or unreadable" in (tmp_path / "out" / "result.md").read_text()


def test_missing_and_broken_images_are_skipped_and_listed(coco: Path, tmp_path: Path) -> None:
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    folder = tmp_path / "images"
    folder.mkdir()
    ids = annotations.image_ids
    (folder / f"{ids[0]:012d}.jpg").symlink_to(coco / "images" / f"{ids[0]:012d}.jpg")
    (folder / f"{ids[1]:012d}.jpg").write_bytes(b"not a jpeg")
    (folder / f"{ids[2]:012d}.jpg").symlink_to(coco / "images" / f"{ids[3]:012d}.jpg")  # another image's size
    images = DetectionImages(annotations, folder, train=False, canvas=CANVAS)
    assert len(images) == 3 and len(images.skipped) == len(ids) - 3
    assert "no file" in images.skipped[0][1]
    assert "image" in images.item(0, 0) and "skipped" not in images.item(0, 0)
    assert "cannot read image" in images.item(1, 0)["skipped"][1]
    if annotations.images[ids[2]]["width"] != annotations.images[ids[3]]["width"]:
        assert "annotations are for" in images.item(2, 0)["skipped"][1]
    # at train, an unreadable image is replaced by the next usable one and reported
    batches = DetectionBatches(DetectionImages(annotations, folder, train=True, canvas=CANVAS), 4, seed=0, start=0)
    batch = batches.batch(0)
    assert len(batch["images"]) == 4 and any("cannot read image" in reason for _, reason in batch["skipped"])


# --------------------------------------------------------------------------------------------------
# Pieces


def test_views_fit_the_canvas_and_map_boxes_back() -> None:
    image = torch.randint(0, 255, (3, 480, 640), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [600.0, 0.0, 640.0, 30.0]])
    view = eval_view(image, boxes, (800, 1024))
    assert tuple(view.image.shape[-2:]) == (768, 1024)  # s = min(800/480, 1024/640) = 1.6
    assert torch.allclose(boxes_to_original(view.boxes, view.scale, 480, 640), boxes)
    tiny = eval_view(torch.zeros(3, 1, 1, dtype=torch.uint8), torch.zeros(0, 4), (800, 1024))
    assert tuple(tiny.image.shape[-2:]) == (800, 800)
    rng = np.random.default_rng(0)
    for _ in range(20):
        view = train_view(image, boxes, rng, (800, 1024), flip=True)
        assert view.image.shape[-2] <= 800 and view.image.shape[-1] <= 1024
        assert 0.8 * 1.6 - 1e-3 <= view.scale[0] <= 1.25 * 1.6 + 1e-3
        if len(view.boxes):
            assert (view.boxes[:, 2] > view.boxes[:, 0]).all() and (view.boxes[:, 0] >= 0).all()
            assert (view.boxes[:, 2] <= view.image.shape[-1]).all() and (view.boxes[:, 3] <= view.image.shape[-2]).all()
    first = train_view(image, boxes, np.random.default_rng([1, 2]), (800, 1024))
    second = train_view(image, boxes, np.random.default_rng([1, 2]), (800, 1024))
    assert torch.equal(first.image, second.image) and torch.equal(first.boxes, second.boxes)


def test_schedule_follows_a3() -> None:
    steps, warmup = plan_steps(num_images=118287, batch_size=128, epochs=30, warmup_epochs=0.25, max_steps=None)
    assert (steps, warmup) == (27724, 231)
    assert lr_factor(0, steps, warmup) == pytest.approx(1 / 231)
    assert lr_factor(230, steps, warmup) == pytest.approx(1.0)
    assert lr_factor(round(2 / 3 * steps) - 1, steps, warmup) == 1.0
    assert lr_factor(round(2 / 3 * steps), steps, warmup) == pytest.approx(0.1)
    assert lr_factor(round(8 / 9 * steps), steps, warmup) == pytest.approx(0.01)
    assert plan_steps(43, 4, 30, 0.25, max_steps=6) == (6, 3)


def test_batches_split_over_processes_and_resume(coco: Path) -> None:
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    images = DetectionImages(annotations, coco / "images", train=True, canvas=(64, 64))
    whole = DetectionBatches(images, 4, seed=5, start=0)
    halves = [DetectionBatches(images, 4, seed=5, start=0, rank=r, world_size=2) for r in range(2)]
    for step in (0, 11, 12):  # 12 steps of 4 = 48 > 43 images: the stream crosses into the next epoch
        one = whole.batch(step)
        two = [h.batch(step) for h in halves]
        assert all(torch.equal(a, b) for a, b in zip(one["images"], two[0]["images"] + two[1]["images"]))
    resumed = next(iter(DetectionBatches(images, 4, seed=5, start=11)))
    assert resumed["step"] == 11 and all(torch.equal(a, b) for a, b in zip(resumed["images"],
                                                                            whole.batch(11)["images"]))


def test_global_head_is_torchvisions_head_in_one_process(coco: Path) -> None:
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    plan = FinetunePlan(_plan_settings(resolution=(64, 64), batch_size=2, flip=False, head="fcos"), seed=0, steps=1,
                        warmup_steps=0, lr=1e-3)
    model = build_detector(load_encoder("torchvision:resnet18"), 80, plan).train()
    assert isinstance(model.head, GlobalFCOSHead)
    batch = DetectionBatches(DetectionImages(annotations, coco / "images", train=True, canvas=(64, 64)), 2,
                             seed=0, start=0).batch(0)
    with torch.no_grad():
        ours = model(as_float(batch["images"]), batch["targets"])
        plain = FCOSHead(32, 1, 80)
        plain.load_state_dict(model.head.state_dict())
        model.head = plain
        reference = model(as_float(batch["images"]), batch["targets"])
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


@pytest.mark.parametrize("head", ["fcos-star", "fcos"])
def test_one_image_of_128_px_with_32_fpn_channels_is_predicted(head: str) -> None:
    """Its P7 map is 1x1, so each GroupNorm group of the head holds one value (PyTorch refuses that even in eval
    mode): a lone image at the end of an eval set failed after the whole fine-tune."""
    plan = FinetunePlan(_plan_settings(resolution=(128, 128), head=head), seed=0, steps=1,  # 32 FPN channels
                        warmup_steps=0, lr=1e-3)
    model = build_detector(load_encoder("torchvision:resnet18"), 3, plan).eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 128, 128)])
    assert len(detections) == 1 and set(detections[0]) == {"boxes", "scores", "labels"}
