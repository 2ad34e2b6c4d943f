"""Evaluations meeting hostile input: corrupt, enormous or mistyped files, and an output folder in use.

Each case must end in a one-line ``VitoError``/``DataError`` naming the file, or in a counted skip that the
Result reports as partial; never a traceback from a library, a silent wrong number, or a lost Result.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vito.errors import DataError, VitoError
from vito.eval.core.registry import settings_from_mapping
from vito.eval.core.result import read_result
from vito.eval.core.running import run_evaluation
from vito.eval.dense.detection.data import load_annotations
from vito.eval.dense.detection.metrics import check_results
from vito.eval.dense.segmentation.segment import Segment
from vito.eval.video import ucf101


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` grey pixels (a decompression bomb, a few bytes long)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _voc(tmp_path: Path, ids: tuple[str, ...] = ("a", "b")) -> Path:
    """A small VOC 2012 folder (4x3 images, masks of 0/1/255) with a ``pred/`` copy of the masks."""
    root = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "pred"):
        (root / folder).mkdir(parents=True)
    mask = np.array([[0, 1, 1, 0], [0, 1, 255, 0], [0, 0, 0, 0]], dtype=np.uint8)
    for i in ids:
        Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        Image.fromarray(mask, "L").save(root / "SegmentationClass" / f"{i}.png")
        Image.fromarray(mask, "L").save(root / "pred" / f"{i}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return root


def _score_voc(root: Path, out: Path) -> Any:
    settings = settings_from_mapping(Segment, {"dataset": "voc", "root": root, "predictions": root / "pred"})
    return run_evaluation("segment", settings, out)


# --------------------------------------------------------------------------------------------------
# vito eval segment and the VOC / ADE20K readers


@pytest.mark.parametrize("which", ["pred", "SegmentationClass"])
def test_segment_skips_and_counts_a_decompression_bomb_mask(tmp_path: Path, which: str) -> None:
    root = _voc(tmp_path)
    _png_header(root / which / "a.png", 20000, 20000)  # 400 Mpixel: PIL's DecompressionBombError
    result = _score_voc(root, tmp_path / "out")
    assert (result.coverage.used, result.coverage.expected) == (1, 2)
    assert result.skipped[0][0] == "a" and "decompression bomb" in result.skipped[0][1]
    assert "PARTIAL" in (tmp_path / "out" / "result.md").read_text()


def test_segment_skips_a_mask_over_the_pixel_limit_instead_of_decoding_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 12 pixels: over the limit, under twice it (a warning)
    root = _voc(tmp_path)
    with pytest.raises(DataError, match="no image of voc val could be scored"):
        _score_voc(root, tmp_path / "out")


def test_voc_split_list_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_bytes(b"a\n\xff\xfeb\n")
    with pytest.raises(DataError, match=r"val.txt is not a readable UTF-8 text file"):
        _score_voc(root, tmp_path / "out")


def test_voc_split_list_with_a_repeated_id_is_a_data_error(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\na\n")  # "a" would be scored and counted twice
    with pytest.raises(DataError, match=r"val.txt: 1 ids occur more than once \(e.g. \['a'\]\)"):
        _score_voc(root, tmp_path / "out")


@pytest.mark.parametrize("fault", ["labels outside the classes", "no readable image"])
def test_segment_finetune_bad_training_data_stops_in_the_main_process(tmp_path: Path, fault: str) -> None:
    """Raised in a DataLoader worker, the DataError came wrapped in the worker's traceback and the process hung at
    exit (the worker ignores SIGTERM); the batch now carries it and the loss raises it as one line."""
    from vito.eval.dense.segmentation.augment import SegmentationBatches, TrainAugment
    from vito.eval.dense.segmentation.data import open_dataset
    from vito.eval.dense.segmentation.recipe import segmentation_loss

    root = _voc(tmp_path)
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


def test_ade20k_class_list_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    from vito.eval.dense.segmentation.data import open_dataset

    base = tmp_path / "ADEChallengeData2016"
    (base / "images" / "validation").mkdir(parents=True)
    (base / "annotations" / "validation").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(base / "images" / "validation" / "x.jpg")
    (base / "objectInfo150.csv").write_bytes(b"Idx,Ratio,Train,Val,Name\n1,0.1,1,1,caf\xe9\n")
    with pytest.raises(DataError, match="objectInfo150.csv is not a readable UTF-8 text file"):
        open_dataset("ade20k", tmp_path, "val")


# --------------------------------------------------------------------------------------------------
# vito eval detect: the annotation and results files


def _instances() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "width": 10, "height": 10}, {"id": 2, "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}],
    }


@pytest.mark.parametrize(("where", "key", "value", "message"), [
    ("annotations", "bbox", ["1", "1", "4", "4"], r"annotation #0 \(id 1\) has bbox .*four finite numbers"),
    ("annotations", "bbox", [1, 1], r"has bbox \[1, 1\]: four finite numbers"),
    ("annotations", "bbox", [1, 1, -4, 4], "negative width or height"),
    ("annotations", "area", "big", "has area 'big'"),
    ("annotations", "iscrowd", "no", "has iscrowd 'no': 0 or 1"),
    ("annotations", "image_id", [1], r"has image_id \[1\]: an integer"),
    ("images", "id", "1", "image #0 has id '1': an integer"),
    ("images", "width", "10", "image #0 .* positive integers"),
    ("images", "height", 0, "image #0 .* positive integers"),
    ("categories", "id", 1.0, "category #0 has id 1.0: an integer"),
])
def test_detect_annotations_with_wrong_types_are_a_data_error(tmp_path: Path, where: str, key: str, value: Any,
                                                              message: str) -> None:
    data = _instances()
    data[where][0][key] = value
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        load_annotations(path, "coco")


def test_detect_annotations_with_an_empty_box_and_an_image_without_boxes_are_scored(tmp_path: Path) -> None:
    data = _instances()
    data["annotations"].append({**data["annotations"][0], "id": 2, "bbox": [3, 3, 0, 0], "area": 0})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    assert sorted(load_annotations(path, "coco").images) == [1, 2]


def test_detect_results_with_an_unhashable_image_id_are_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_instances()))
    annotations = load_annotations(path, "coco")
    results = [{"image_id": [1], "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.5}]
    with pytest.raises(DataError, match=r"detection #0 .* has image_id \[1\]: an integer"):
        check_results(results, annotations, "bbox")


@pytest.mark.parametrize(("segmentation", "message"), [
    ("x", "has segmentation 'x': polygons or an RLE"),
    ([["a", "b", "c", "d", "e", "f"]], "has a polygon segmentation that is not lists of x, y pairs"),
    ({"counts": "zz", "size": [1, 1]}, "has an RLE segmentation that cannot be decoded"),
    (None, "lacks 'segmentation'"),
])
def test_detect_segm_ground_truth_that_cannot_be_decoded_is_a_data_error(tmp_path: Path, segmentation: Any,
                                                                        message: str) -> None:
    data = _instances()
    if segmentation is not None:
        data["annotations"][0]["segmentation"] = segmentation
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    results = [{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [1, 1, 4, 4],
                "segmentation": {"size": [10, 10], "counts": [11, 4, 6, 4, 75]}}]
    check_results(results, load_annotations(path, "coco"), "bbox")  # boxes need no masks
    with pytest.raises(DataError, match=f"annotation #0 \\(id 1\\) {message}"):
        check_results(results, load_annotations(path, "coco"), "segm")


def test_detect_segm_results_with_undecodable_masks_are_a_data_error(tmp_path: Path) -> None:
    data = _instances()
    data["annotations"][0]["segmentation"] = [[1, 1, 5, 1, 5, 5, 1, 5]]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    annotations = load_annotations(path, "coco")
    good = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [10, 10], "counts": [11, 4, 85]}}
    check_results([good], annotations, "segm")
    for segmentation, message in (([[1, 1, 5, 1, 5, 5]], "results need RLE"),
                                  ({"size": [10, 10], "counts": [50, 60]}, "cannot be decoded")):
        with pytest.raises(DataError, match=f"detection #0 .*{message}"):
            check_results([{**good, "segmentation": segmentation}], annotations, "segm")


def test_detect_annotation_file_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_instances()).encode())
    assert load_annotations(path, "coco").image_ids == [1, 2]


# --------------------------------------------------------------------------------------------------
# UCF-101


@pytest.mark.parametrize(("class_index", "message"), [
    (b"\xff1 A\n", "class index .* is not a readable UTF-8 text file"),
    (b"1 A B\n", "line 1: '1 A B' is not"),
    (b"x A\n", "line 1: 'x A' is not"),
    (b"1 A\n1 B\n", "line 2: '1 B' is not .* a new id"),
    (b"1 A\n3 B\n", "must be 1..N without gaps"),
])
def test_ucf101_malformed_class_index_is_a_data_error(tmp_path: Path, class_index: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_bytes(class_index)
    with pytest.raises(DataError, match=message):
        ucf101.read_class_names(tmp_path)


@pytest.mark.parametrize(("split_list", "message"), [
    (b"A/v_A_g01_c01.avi one\n", "line 1: 'A/v_A_g01_c01.avi one' is not"),
    (b"A/v_\xff.avi 1\n", "split file .* is not a readable UTF-8 text file"),
    (b"A/v_A_g01_c01.avi 1\nA/v_A_g01_c01.avi 1\n", "line 2: A/v_A_g01_c01.avi is listed more than once"),
    (b"\r\n\n", "trainlist01.txt lists no videos"),
])
def test_ucf101_malformed_split_list_is_a_data_error(tmp_path: Path, split_list: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n")
    (tmp_path / "trainlist01.txt").write_bytes(split_list)
    with pytest.raises(DataError, match=message):
        ucf101.read_split(tmp_path, 1, "train")


# --------------------------------------------------------------------------------------------------
# An output folder that holds another run


def test_a_run_never_replaces_another_runs_result(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    out = tmp_path / "out"
    _score_voc(root, out)
    _score_voc(root, out)  # the same run again may replace itself
    before = (out / "result.json").read_text()
    other = _voc(tmp_path / "other")
    with pytest.raises(VitoError, match=r"already holds another run's result \(.*: root, predictions\)"):
        _score_voc(other, out)
    detect = {"dataset": "coco", "val_ann": tmp_path / "instances.json", "predictions": tmp_path / "results.json"}
    (tmp_path / "instances.json").write_text(json.dumps(_instances()))
    (tmp_path / "results.json").write_text("[]")
    from vito.eval.core.registry import get

    with pytest.raises(VitoError, match="evaluation or encoder: evaluation segment.*give --overwrite"):
        run_evaluation("detect", settings_from_mapping(get("detect"), detect), out)
    assert (out / "result.json").read_text() == before and read_result(out).evaluation == "segment"


def test_out_that_is_a_file_or_holds_a_foreign_result_json_is_refused_before_running(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(VitoError, match="is a file, not a folder"):
        _score_voc(root, tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "result.json").write_text('{"top1": 0.5}')
    with pytest.raises(VitoError, match="already holds a result.json that is not a vito result"):
        _score_voc(root, tmp_path / "foreign")
    assert (tmp_path / "foreign" / "result.json").read_text() == '{"top1": 0.5}'
    assert (tmp_path / "file").read_text() == "mine"
