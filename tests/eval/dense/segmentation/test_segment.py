"""``vito eval segment --predictions``: scoring any method's masks in the shipped VOC / ADE20K layouts; a mask
that is a decompression bomb or over the pixel limit is a counted skip, never decoded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.eval.dense.segmentation.layouts import ADE_IDS, build_ade20k, build_voc, score_voc, tiny_voc
from tests.helpers import png_header
from vito.errors import DataError, VitoError
from vito.eval.core.registry import settings_dict, settings_from_mapping
from vito.eval.core.result import Result, read_result
from vito.eval.core.running import add_evaluation_commands, run_evaluation, run_from_args
from vito.eval.dense.segmentation import segment
from vito.eval.dense.segmentation.metrics import SegmentationAreas, segmentation_scores
from vito.eval.dense.segmentation.segment import Segment
from vito.report.grid import Cell, matches

OVERFIT = Path("segmentation/voc2012/predictions/overfit-2007_000033/fcn16s_epoch_200.png")


def _score(tmp: Path, **settings) -> dict:
    run_evaluation("segment", settings_from_mapping(Segment, settings), tmp / "out")
    return json.loads((tmp / "out" / "result.json").read_text())


def _voc_predictions(shared: Path, tmp: Path) -> Path:
    pred = tmp / "pred"
    pred.mkdir()
    (pred / "2007_000033.png").symlink_to(shared / OVERFIT)
    (pred / "2007_000129.png").symlink_to(shared / "segmentation/voc2012/SegmentationClass/2007_000129.png")
    return pred


def test_voc_scoring_equals_accumulating_the_files_directly(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path)
    data = _score(tmp_path, dataset="voc", root=root, predictions=_voc_predictions(shared_data, tmp_path))
    areas = SegmentationAreas(21)
    areas.update(np.asarray(Image.open(shared_data / OVERFIT)),
                 np.asarray(Image.open(shared_data / "segmentation/voc2012/SegmentationClass/2007_000033.png")))
    gt = np.asarray(Image.open(shared_data / "segmentation/voc2012/SegmentationClass/2007_000129.png"))
    areas.update(gt, gt)  # the 255 pixels of a mask used as its own prediction are ignored anyway
    expected = segmentation_scores(areas)
    assert data["metrics"]["mIoU"]["value"] == expected.miou  # unrounded, exactly
    assert data["metrics"]["aAcc"]["value"] == expected.aacc and data["metrics"]["mAcc"]["value"] == expected.macc
    assert "devkit_mIoU" not in data["metrics"] and data["metrics"]["out_of_range_pixels"]["value"] == 0
    assert data["coverage"] == {"used": 2, "expected": 2, "note": "images with a readable mask and prediction",
                                "training_skipped": 0, "partial": False}
    rows = data["tables"]["per_class"]
    assert len(rows) == 21 and rows[1]["name"] == "aeroplane" and rows[15]["iou"] == 1.0 and rows[3]["iou"] is None
    assert "mIoU" in (tmp_path / "out" / "result.md").read_text()


def test_missing_broken_and_wrongly_sized_files_are_skipped_listed_counted(shared_data: Path, tmp_path: Path) -> None:
    ids = ("2007_000033", "2007_000129", "2007_999999", "2008_000001")
    root = build_voc(shared_data, tmp_path, splits={"val": ids})
    pred = _voc_predictions(shared_data, tmp_path)
    (pred / "2007_000129.png").unlink()
    Image.new("L", (10, 10)).save(pred / "2007_000129.png")  # wrong size
    (root / "VOC2012" / "SegmentationClass" / "2008_000001.png").write_bytes(b"not a png")  # broken ground truth
    Image.new("L", (10, 10)).save(pred / "2008_000001.png")
    data = _score(tmp_path, dataset="voc", root=root, predictions=pred)
    assert data["coverage"]["used"] == 1 and data["coverage"]["expected"] == 4 and data["coverage"]["partial"]
    reasons = dict(data["skipped"])
    assert "10x10" in reasons["2007_000129"] and "334x500" in reasons["2007_000129"]
    assert "does not exist" in reasons["2007_999999"] and "cannot be decoded" in reasons["2008_000001"]
    assert "PARTIAL" in (tmp_path / "out" / "result.md").read_text()


def test_nothing_scorable_empty_split_and_missing_predictions_are_errors(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path, splits={"val": ("2007_000033",), "train": ()})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="could be scored"):
        _score(tmp_path, dataset="voc", root=root, predictions=tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        _score(tmp_path, dataset="voc", root=root, split="train", predictions=tmp_path / "empty")
    with pytest.raises(VitoError, match="--predictions"):
        _score(tmp_path, dataset="voc", root=root)
    with pytest.raises(VitoError, match="not a folder"):
        _score(tmp_path, dataset="voc", root=root, predictions=tmp_path / "absent")


def test_ade20k_official_convention_needs_label_offset_1(shared_data: Path, tmp_path: Path) -> None:
    base = build_ade20k(shared_data, tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in ADE_IDS:  # the annotations themselves are perfect predictions in the 1..150 convention
        (pred / f"{i}.png").symlink_to(shared_data / "segmentation/ade20k/annotations" / f"{i}.png")
    official = _score(tmp_path / "a", dataset="ade20k", root=base, predictions=pred, label_offset=1)
    assert official["metrics"]["mIoU"]["value"] == 1.0 and official["metrics"]["aAcc"]["value"] == 1.0
    present = sum(1 for row in official["tables"]["per_class"] if row["label_area"] > 0)
    assert official["metrics"]["devkit_mIoU"]["value"] == pytest.approx(present / 150)
    assert official["tables"]["per_class"][0]["name"] == "wall"
    shifted = _score(tmp_path / "b", dataset="ade20k", root=base, predictions=pred)  # read as 0..149: off by one
    assert shifted["metrics"]["mIoU"]["value"] < 0.05


def test_out_of_range_predictions_are_reported(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path, splits={"val": ("2007_000033",)})
    pred = tmp_path / "pred"
    pred.mkdir()
    values = np.zeros((366, 500), dtype=np.uint8)
    values[:10, :10] = 21
    values[-1, -1] = 250
    Image.fromarray(values, mode="L").save(pred / "2007_000033.png")
    label = np.asarray(Image.open(shared_data / "segmentation/voc2012/SegmentationClass/2007_000033.png"))
    evaluated = int((label[:10, :10] != 255).sum() + (label[-1, -1] != 255))
    data = _score(tmp_path, dataset="voc", root=root, predictions=pred)
    assert data["metrics"]["out_of_range_pixels"]["value"] == evaluated > 0
    assert set(data["settings"]["out_of_range_values"]) <= {21, 250} and 21 in data["settings"]["out_of_range_values"]


def test_command_line(shared_data: Path, tmp_path: Path) -> None:
    root = build_voc(shared_data, tmp_path)
    parser = argparse.ArgumentParser()
    add_evaluation_commands(parser.add_subparsers(dest="evaluation"))
    args = parser.parse_args(["segment", "--dataset", "voc", "--root", str(root), "--split", "val",
                              "--predictions", str(_voc_predictions(shared_data, tmp_path)),
                              "--out", str(tmp_path / "cli")])
    result = run_from_args(args)
    assert read_result(tmp_path / "cli").metrics["mIoU"].value == result.metrics["mIoU"].value > 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--dataset", "coco", "--root", str(root), "--out", str(tmp_path)])


def test_under_torchrun_only_rank_0_writes_the_result(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """Every process of a `torchrun ... vito eval` holds the same Result; one writes it (and prints its line)."""
    root = build_voc(shared_data, tmp_path)
    settings = settings_from_mapping(Segment, {"dataset": "voc", "root": root,
                                               "predictions": _voc_predictions(shared_data, tmp_path)})
    monkeypatch.setenv("RANK", "1")
    result = run_evaluation("segment", settings, tmp_path / "rank1")
    assert result.metrics["mIoU"].value is not None and not (tmp_path / "rank1").exists()
    monkeypatch.setenv("RANK", "0")
    assert run_evaluation("segment", settings, tmp_path / "rank0").metrics["mIoU"].value == result.metrics["mIoU"].value
    assert (tmp_path / "rank0" / "result.json").is_file()


@pytest.mark.parametrize("which", ["pred", "SegmentationClass"])
def test_segment_skips_and_counts_a_decompression_bomb_mask(tmp_path: Path, which: str) -> None:
    root = tiny_voc(tmp_path)
    png_header(root / which / "a.png", 20000, 20000)  # 400 Mpixel: PIL's DecompressionBombError
    result = score_voc(root, tmp_path / "out")
    assert (result.coverage.used, result.coverage.expected) == (1, 2)
    assert result.skipped[0][0] == "a" and "decompression bomb" in result.skipped[0][1]
    assert "PARTIAL" in (tmp_path / "out" / "result.md").read_text()


def test_segment_skips_a_mask_over_the_pixel_limit_instead_of_decoding_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 12 pixels: over the limit, under twice it (a warning)
    root = tiny_voc(tmp_path)
    with pytest.raises(DataError, match="no image of voc val could be scored"):
        score_voc(root, tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# Where the fine-tune's lr is chosen (the fine-tunes replaced by scores that depend on the lr and the split)


def _areas(right: int) -> SegmentationAreas:
    """4 pixels of 2 classes, ``right`` of them predicted right: mIoU 1 (4), 7/12 (3), 1/4 (2)."""
    areas = SegmentationAreas(21)
    areas.update(np.array([0, 0, 0 if right < 4 else 1, 0 if right < 3 else 1]), np.array([0, 0, 1, 1]))
    return areas


def _sweep(tmp_path: Path, monkeypatch, **settings) -> tuple[Result, list[tuple]]:
    """`run_sweep` on a 7-image trainaug (2 of them val images) with lrs 0.001, 0.01, 0.1 and seeds 3, 4: on held-out
    images lr 0.01 scores best, on val lr 0.001."""
    root = tiny_voc(tmp_path, ids=("a", "b", "c", "d", "e", "f", "g"))
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    (root / "ImageSets/Segmentation/trainaug.txt").write_text("a\nb\nc\nd\ne\nf\ng\n")
    right = {"heldout": {0.001: 2, 0.01: 4, 0.1: 3}, "val": {0.001: 4, 0.01: 3, 0.1: 2}}
    calls = []

    def fine_tune(sweep, train, scored, lr, seed, held=None):
        calls.append((train.split, len(train.items), scored.split, lr, seed))
        return segment.RunScores(lr, seed, sweep.out_dir / "runs" / str(len(calls)), _areas(right[scored.split][lr]),
                                 [], [], reused=False)

    monkeypatch.setattr(segment, "_one_run", fine_tune)
    values = {"dataset": "voc", "root": root, "lrs": [0.001, 0.01, 0.1], "seeds": [3, 4], **settings}
    result = segment.run_sweep(torch.nn.Linear(1, 1), settings_from_mapping(Segment, values),
                               segment.open_dataset("voc", root, "val"), tmp_path)
    return result, calls


def test_the_lr_is_chosen_on_held_out_training_images_then_trained_on_all_of_them_for_every_seed(
        tmp_path: Path, monkeypatch) -> None:
    result, calls = _sweep(tmp_path, monkeypatch)
    held = segment.hold_out(segment.open_dataset("voc", tmp_path / "VOC2012", "trainaug"),
                            segment.open_dataset("voc", tmp_path / "VOC2012", "val"), seed=0)
    assert calls == [("trainaug without heldout", 6, "heldout", lr, 3) for lr in (0.001, 0.01, 0.1)] + \
        [("trainaug", 7, "val", 0.01, seed) for seed in (3, 4)]  # each lr once, then the chosen lr per seed
    assert result.value("best_lr") == 0.01 and "held-out training images" in result.metrics["best_lr"].label
    assert result.value("mIoU") == pytest.approx(7 / 12)  # lr 0.01 on val, not val's own best (1.0 at lr 0.001)
    assert result.tables["heldout_ids"] == [{"id": i} for i in held.ids] and held.ids[0] not in ("a", "b")
    assert result.settings["selection"] == {"how": "heldout", "chosen_on": "heldout", **held.identity()}
    assert [row["scored_on"] for row in result.tables["sweep"]] == ["heldout"] * 3 + ["val"] * 2
    assert [row["mIoU_mean"] for row in result.tables["per_lr"]] == pytest.approx([0.25, 1.0, 7 / 12])


def test_choosing_on_val_stays_available_and_says_so(tmp_path: Path, monkeypatch) -> None:
    result, calls = _sweep(tmp_path, monkeypatch, lr_selection="val")
    assert calls == [("trainaug", 7, "val", lr, seed) for lr in (0.001, 0.01, 0.1) for seed in (3, 4)]
    assert result.value("best_lr") == 0.001 and "val (optimistic)" in result.metrics["best_lr"].label
    assert result.settings["selection"] == {"how": "val", "chosen_on": "val"} and "heldout_ids" not in result.tables
    current = settings_from_mapping(Segment, {"dataset": "voc", "root": tmp_path})
    stored = {**settings_dict(current), "lr_selection": "val"}
    cell = Cell("row", "segment", tmp_path, SimpleNamespace(), {}, settings=current)  # a row with an encoder
    assert not matches(stored, cell, None)  # `vito report` recomputes a cell chosen on val
    del stored["lr_selection"]
    assert not matches(stored, cell, None)  # and one made before the setting existed


def test_fine_tune_settings_are_refused_when_only_scoring(tmp_path: Path) -> None:
    root = tiny_voc(tmp_path)
    settings = settings_from_mapping(Segment, {"dataset": "voc", "root": root, "predictions": root / "pred",
                                               "loss_average": "all_pixels", "lr_selection": "val"})
    with pytest.raises(VitoError, match="--lr-selection val, --loss-average: settings of the fine-tune"):
        run_evaluation("segment", settings, tmp_path / "out")
