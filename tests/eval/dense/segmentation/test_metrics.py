"""mmseg-exact segmentation metrics and the dataset readers, on constructed cases and the shared samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassJaccardIndex

from tests.eval.dense.segmentation.layouts import ADE_IDS, CROP_KEYS, build_ade20k, build_voc
from vito.data.images import UnreadableImage, read_index_png
from vito.errors import DataError
from vito.eval.dense.segmentation.data import open_dataset, reduce_zero_label
from vito.eval.dense.segmentation.metrics import SegmentationAreas, intersect_and_union, segmentation_scores

# --------------------------------------------------------------------------------------------------
# Constructed cases


def _accumulate(pairs, num_classes):
    areas = SegmentationAreas(num_classes)
    for pred, label in pairs:
        areas.update(np.array(pred), np.array(label))
    return areas


def test_dataset_level_accumulation_differs_from_mean_of_per_image_ious() -> None:
    image_a = ([[0] * 7 + [1]], [[0] * 8])  # class 0: I 7, U 8; class 1: I 0, U 1
    image_b = ([[1, 1]], [[1, 1]])  # class 1: I 2, U 2
    scores = segmentation_scores(_accumulate([image_a, image_b], 2))
    assert scores.iou.tolist() == pytest.approx([7 / 8, 2 / 3])
    assert scores.miou == pytest.approx((7 / 8 + 2 / 3) / 2)
    assert scores.aacc == pytest.approx(9 / 10)
    assert scores.macc == pytest.approx((7 / 8 + 1.0) / 2)
    per_image = [segmentation_scores(_accumulate([pair], 2)).miou for pair in (image_a, image_b)]
    assert per_image == pytest.approx([(7 / 8 + 0) / 2, 1.0])
    assert abs(np.mean(per_image) - scores.miou) > 0.05


def test_ignored_pixels_do_not_count_whatever_is_predicted_there() -> None:
    plain = segmentation_scores(_accumulate([([[0, 1, 1]], [[0, 1, 0]])], 2))
    with_void = segmentation_scores(_accumulate([([[0, 1, 1, 1, 0, 9]], [[0, 1, 0, 255, 255, 255]])], 2))
    assert with_void.iou.tolist() == pytest.approx(plain.iou.tolist())
    assert (with_void.aacc, with_void.miou) == pytest.approx((plain.aacc, plain.miou))
    areas = _accumulate([([[0, 1, 1, 1, 0, 9]], [[0, 1, 0, 255, 255, 255]])], 2)
    assert areas.out_of_range_pixels == 0  # the 9 sits on an ignored pixel


def test_absent_class_is_left_out_of_the_mean_but_counts_zero_in_the_devkit_mean() -> None:
    areas = _accumulate([([[0, 0, 1, 1]], [[0, 0, 1, 0]])], 3)  # class 2 is neither predicted nor labelled
    scores = segmentation_scores(areas)
    assert math.isnan(scores.iou[2]) and math.isnan(scores.acc[2])
    assert scores.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores.devkit_miou == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_predicted_but_unlabelled_class_has_iou_zero_and_no_accuracy() -> None:
    scores = segmentation_scores(_accumulate([([[0, 2]], [[0, 0]])], 3))
    assert scores.iou[2] == 0.0 and math.isnan(scores.acc[2])
    assert scores.miou == pytest.approx((1 / 2 + 0.0) / 2)  # class 1 (no union) left out; class 2 counts 0
    assert scores.macc == pytest.approx(1 / 2)


def test_prediction_values_outside_the_classes_count_as_wrong_and_are_reported() -> None:
    areas = _accumulate([([[0, 7, 255, -1]], [[0, 0, 1, 1]])], 2)
    scores = segmentation_scores(areas)
    assert areas.label.tolist() == [2, 2] and areas.pred.tolist() == [1, 0] and areas.intersect.tolist() == [1, 0]
    assert scores.iou.tolist() == pytest.approx([1 / 2, 0.0])
    assert scores.aacc == pytest.approx(1 / 4)
    assert areas.out_of_range_pixels == 3 and areas.out_of_range_values == {-1, 7, 255}


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        intersect_and_union(np.zeros((2, 3)), np.zeros((3, 2)), 2)


def test_reduce_zero_label() -> None:
    assert reduce_zero_label(np.array([0, 1, 2, 150, 255])).tolist() == [255, 0, 1, 149, 255]


# --------------------------------------------------------------------------------------------------
# Reference parity on the shared samples


def _confusion_miou(pairs, num_classes: int) -> tuple[float, np.ndarray]:
    """Direct recomputation: one confusion matrix over all valid pixels, IoU = diag / (row + col - diag)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, label in pairs:
        keep = label != 255
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    diag = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - diag
    iou = np.where(union > 0, diag / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou


def _torchmetrics(pairs, num_classes: int, average: str) -> torch.Tensor:
    metric = MulticlassJaccardIndex(num_classes=num_classes, average=average, ignore_index=255)
    for pred, label in pairs:
        metric.update(torch.from_numpy(pred), torch.from_numpy(label))
    return metric.compute().double()


def _crops(shared: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = shared / "segmentation" / "voc2012" / "crops513"
    return [(read_index_png(folder / f"{k}_pred_idx.png", "pred"), read_index_png(folder / f"{k}_target_idx.png", "gt"))
            for k in CROP_KEYS]


def test_voc_crops_miou_equals_torchmetrics_and_a_direct_recomputation(shared_data: Path) -> None:
    pairs = _crops(shared_data)
    areas = _accumulate(pairs, 21)
    scores = segmentation_scores(areas)
    direct_miou, direct_iou = _confusion_miou(pairs, 21)
    np.testing.assert_allclose(scores.iou, direct_iou, rtol=0, atol=1e-12)
    assert scores.miou == pytest.approx(direct_miou, abs=1e-12)
    # torchmetrics >= 1.0 gives a class absent from prediction and target weight 0 in the macro mean (the same
    # classes mmseg's NaN-mean leaves out); its per-class values report such a class as 0 (zero_division), not NaN.
    assert scores.miou == pytest.approx(float(_torchmetrics(pairs, 21, "macro")), abs=1e-6)
    per_class = _torchmetrics(pairs, 21, "none").numpy()
    present = areas.union > 0
    assert 0 < present.sum() < 21  # the comparison covers absent classes as well
    np.testing.assert_allclose(scores.iou[present], per_class[present], atol=1e-6)
    assert (per_class[~present] == 0).all() and np.isnan(scores.iou[~present]).all()
    assert scores.miou != pytest.approx(float(per_class.mean()), abs=1e-3)  # a plain mean over 21 would differ
    assert 0.9 < scores.miou < 1.0 and areas.images == 8


def test_overfit_predictions_against_the_palette_mask(shared_data: Path, tmp_path: Path) -> None:
    dataset = open_dataset("voc", build_voc(shared_data, tmp_path), "val")
    item = next(i for i in dataset.items if i.id == "2007_000033")
    label = dataset.read_mask(item)
    assert [int((label == v).sum()) for v in (0, 1, 255)] == [143868, 30937, 8195]  # the data README's counts
    folder = shared_data / "segmentation" / "voc2012" / "predictions" / "overfit-2007_000033"
    for name in ("fcn8s_epoch_100", "fcn16s_epoch_200", "fcn32s_epoch_300", "psp_epoch_100"):
        pred = read_index_png(folder / f"{name}.png", "prediction")
        scores = segmentation_scores(_accumulate([(pred, label)], 21))
        direct_miou, direct_iou = _confusion_miou([(pred, label)], 21)
        assert scores.miou == pytest.approx(direct_miou, abs=1e-12), name
        assert scores.miou == pytest.approx(float(_torchmetrics([(pred, label)], 21, "macro")), abs=1e-6), name
        assert np.isfinite(scores.iou).sum() == 2 and scores.miou > 0.8, name  # over-fit: background + aeroplane


def test_mode_l_mask_of_2007_000129(shared_data: Path, tmp_path: Path) -> None:
    dataset = open_dataset("voc", build_voc(shared_data, tmp_path), "val")
    item = next(i for i in dataset.items if i.id == "2007_000129")
    with Image.open(item.mask) as image:
        assert image.mode == "L"
    label = dataset.read_mask(item)
    assert label.shape == (500, 334) and set(np.unique(label).tolist()) == {0, 2, 15, 255}
    counts = {c: int((label == c).sum()) for c in (0, 2, 15)}
    scores = segmentation_scores(_accumulate([(np.zeros_like(label), label)], 21))  # all background
    assert scores.iou[0] == pytest.approx(counts[0] / sum(counts.values()))
    assert scores.iou[2] == 0.0 and scores.iou[15] == 0.0
    assert scores.miou == pytest.approx(counts[0] / sum(counts.values()) / 3)
    assert scores.aacc == pytest.approx(counts[0] / sum(counts.values()))


def test_reduce_zero_label_on_the_ade20k_annotations(shared_data: Path, tmp_path: Path) -> None:
    dataset = open_dataset("ade20k", build_ade20k(shared_data, tmp_path), "val")
    assert [i.id for i in dataset.items] == list(ADE_IDS) and dataset.num_classes == 150
    assert dataset.class_names[0] == "wall"
    areas = SegmentationAreas(150)
    for item in dataset.items:
        with Image.open(item.mask) as image:
            raw = np.asarray(image, dtype=np.int64)
        label = dataset.read_mask(item)
        assert ((label == 255) == (raw == 0)).all()
        assert (label[raw > 0] == raw[raw > 0] - 1).all()
        areas.update(label, label)
    scores = segmentation_scores(areas)
    present = int((areas.label > 0).sum())
    assert scores.miou == 1.0 and scores.aacc == 1.0
    assert scores.devkit_miou == pytest.approx(present / 150)  # absent classes count 0 in the devkit mean
    assert 10 < present < 30


# --------------------------------------------------------------------------------------------------
# Readers: bad input


def test_ground_truth_outside_the_classes_names_the_file_and_values(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path)
    mask = root / "VOC2012" / "SegmentationClass" / "2007_000033.png"
    mask.unlink()
    Image.fromarray(np.array([[0, 21], [200, 255]], dtype=np.uint8), mode="L").save(mask)
    dataset = open_dataset("voc", root, "val")
    with pytest.raises(DataError, match=r"2007_000033\.png: ground-truth values \[21, 200\]"):
        dataset.read_mask(dataset.items[0])


def test_ade20k_annotation_value_151_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    base = build_ade20k(shared_data, tmp_path)
    mask = base / "annotations" / "validation" / f"{ADE_IDS[0]}.png"
    mask.unlink()
    Image.fromarray(np.array([[0, 151]], dtype=np.uint8), mode="L").save(mask)
    dataset = open_dataset("ade20k", tmp_path, "val")  # the parent of ADEChallengeData2016 works too
    with pytest.raises(DataError, match=r"values \[151\]"):
        dataset.read_mask(dataset.items[0])


def test_empty_split_list_and_missing_layouts_are_clear_errors(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path / "voc", splits={"val": (), "train": ("2007_000033",)})
    with pytest.raises(DataError, match=r"val\.txt is empty"):
        open_dataset("voc", root, "val")
    with pytest.raises(DataError, match=r"trainaug\.txt does not exist"):
        open_dataset("voc", root, "trainaug")
    with pytest.raises(DataError, match="not a VOC 2012 folder"):
        open_dataset("voc", tmp_path / "nothing", "val")
    (tmp_path / "ade" / "ADEChallengeData2016" / "images" / "validation").mkdir(parents=True)
    (tmp_path / "ade" / "ADEChallengeData2016" / "annotations").mkdir()
    with pytest.raises(DataError, match="split is empty"):
        open_dataset("ade20k", tmp_path / "ade", "val")


def test_colour_and_broken_masks_are_unreadable(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "colour.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UnreadableImage, match="mode RGB"):
        read_index_png(tmp_path / "colour.png", "mask")
    with pytest.raises(UnreadableImage, match="cannot be decoded"):
        read_index_png(tmp_path / "broken.png", "mask")
    with pytest.raises(UnreadableImage, match="does not exist"):
        read_index_png(tmp_path / "absent.png", "mask")
