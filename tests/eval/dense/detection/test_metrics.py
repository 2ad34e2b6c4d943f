"""Detection metrics: the shared COCO vectors, pycocotools as the oracle, hand-computed LVIS cases, bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.eval.dense.detection.helpers import tiny_instances
from vito.errors import DataError, VitoError
from vito.eval.core.registry import get, settings_from_mapping
from vito.eval.core.running import run_evaluation
from vito.eval.dense.detection.data import image_file, load_annotations
from vito.eval.dense.detection.metrics import LVIS_MAX_DETS, cap_per_image, check_results, score_detections

# $VITO_DATA/README.md, "detection/": pycocotools 2.0.11 on the 43-image pair
README_STATS = {
    "bbox": [0.548481, 0.744552, 0.621956, 0.559432, 0.549814, 0.548234, 0.435842, 0.599003, 0.600843, 0.608464,
             0.564321, 0.57043],
    "segm": [0.362807, 0.606286, 0.346038, 0.367313, 0.345661, 0.398828, 0.291967, 0.414445, 0.415873, 0.426307,
             0.375751, 0.413898],
}
COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@pytest.fixture(scope="module")
def coco(shared_data: Path) -> Path:
    return shared_data / "detection" / "coco"


@pytest.fixture(scope="module")
def lvis_file(shared_data: Path) -> Path:
    return shared_data / "detection" / "lvis" / "lvis_val_100.json"


def _score_cli(tmp_path: Path, **settings) -> dict:
    """Run the registered evaluation the way ``vito eval detect`` does and read back result.json."""
    out = tmp_path / "out"
    run_evaluation("detect", settings_from_mapping(get("detect"), settings), out)
    return json.loads((out / "result.json").read_text())


def _pycocotools_stats(annotation_file: Path | dict, results: Path | list, iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file)) if isinstance(annotation_file, Path) else _coco_from_dict(annotation_file)
        evaluator = COCOeval(gt, gt.loadRes(str(results) if isinstance(results, Path) else results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def _coco_from_dict(data: dict) -> COCO:
    gt = COCO()
    gt.dataset = copy.deepcopy(data)
    gt.createIndex()
    return gt


# --------------------------------------------------------------------------------------------------
# COCO: the shared vectors


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_reproduces_the_readme_and_pycocotools_unrounded(coco: Path, tmp_path: Path, iou_type: str) -> None:
    annotations = coco / "instances_train2017_overlap43.json"
    results = coco / "fake_results" / f"fake{iou_type}100_results_overlap43.json"
    data = _score_cli(tmp_path, dataset="coco", val_ann=annotations, predictions=results, iou_type=iou_type)
    values = [data["metrics"][key]["value"] for key in COCO_KEYS]
    assert list(data["metrics"]) == COCO_KEYS
    assert np.round(values, 6).tolist() == README_STATS[iou_type]
    assert values == pytest.approx(_pycocotools_stats(annotations, results, iou_type), abs=1e-15, rel=0)  # unrounded
    assert data["coverage"] == {"used": 43, "expected": 43, "note": data["coverage"]["note"],
                                "training_skipped": 0, "partial": False}
    person = next(row for row in data["tables"]["AP per category"] if row["name"] == "person")
    assert 0 < person["AP"] < 1


def test_coco_undefined_metric_is_null(coco: Path, tmp_path: Path) -> None:
    """Without any small ground truth, COCOeval reports APs and ARs as -1: the Result says null."""
    data = json.loads((coco / "instances_train2017_overlap43.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["area"] >= 32 ** 2]
    annotations = tmp_path / "large_only.json"
    annotations.write_text(json.dumps(data))
    results = coco / "fake_results" / "fakebbox100_results_overlap43.json"
    reference = _pycocotools_stats(annotations, results, "bbox")
    assert reference[3] == -1 and reference[9] == -1
    metrics = _score_cli(tmp_path, dataset="coco", val_ann=annotations, predictions=results)["metrics"]
    assert metrics["APs"]["value"] is None and metrics["ARs"]["value"] is None
    assert metrics["AP"]["value"] == reference[0]


def test_coco_empty_results_score_zero(coco: Path) -> None:
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    scores = score_detections(annotations, [], "bbox")
    assert scores.metrics["AP"] == 0.0 and scores.metrics["AR100"] == 0.0 and scores.num_detections == 0


# --------------------------------------------------------------------------------------------------
# LVIS: constructed detections


def _exact(annotations, score: float = 1.0) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in annotations.data["annotations"]]


def test_lvis_exact_boxes_score_one(lvis_file: Path) -> None:
    annotations = load_annotations(lvis_file, "lvis")
    metrics = score_detections(annotations, _exact(annotations), "bbox").metrics
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AR300"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    assert list(metrics) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR300", "ARs", "ARm",
                             "ARl"]


def _pick_lvis_cases(annotations) -> tuple[int, int, list[dict], int, int, int]:
    """(image, frequent category with exactly 2 GT there and nowhere else, their GT, negative category of the
    image that has G ground-truth boxes elsewhere, G, a category neither annotated nor negative in the image)."""
    by_category: dict[int, list[dict]] = {}
    for a in annotations.data["annotations"]:
        by_category.setdefault(a["category_id"], []).append(a)
    for image_id in annotations.image_ids:
        image = annotations.images[image_id]
        for category_id, gts in sorted(by_category.items()):
            if (len(gts) == 2 and {g["image_id"] for g in gts} == {image_id}
                    and annotations.categories[category_id]["frequency"] == "f"):
                negatives = [c for c in image["neg_category_ids"] if c in by_category and c != category_id]
                annotated = {a["category_id"] for a in annotations.annotations_of(image_id)}
                listed = set(image["neg_category_ids"]) | annotated
                unlisted = next(c for c in annotations.category_ids if c not in listed and c in by_category)
                if negatives:
                    n = negatives[0]
                    return image_id, category_id, gts, n, len(by_category[n]), unlisted
    raise AssertionError("lvis_val_100.json has no suitable case")


def test_lvis_hand_computed_perturbation(lvis_file: Path) -> None:
    """One category's ranking TP, FP, TP; an FP in a negative category; a detection in an unlisted category.

    Category c (2 GT in one image): detections TP @1.0, FP @0.5, TP @0.25 give precision 1, 1/2, 2/3 at recall
    1/2, 1/2, 1; interpolated precision is 1 for the 51 recall points 0..0.50 and 2/3 for the 50 above, so
    AP_c = (51 + 50 * 2/3) / 101 at every IoU threshold. Category n is in the image's neg_category_ids: an FP
    ranked above its G exact boxes gives precision j/(j+1), interpolated to G/(G+1) everywhere: AP_n = G/(G+1).
    A detection of a category that the image neither annotates nor lists as negative is not evaluated (LVIS's
    federated rule), so it changes nothing. Every other category keeps AP 1.
    """
    annotations = load_annotations(lvis_file, "lvis")
    image_id, c, gts, n, g_n, unlisted = _pick_lvis_cases(annotations)
    results = [d for d in _exact(annotations) if d["category_id"] != c]
    far = [0.0, 0.0, 2.0, 2.0]
    assert all(g["bbox"][0] > 2 or g["bbox"][1] > 2 for g in annotations.annotations_of(image_id))
    results += [
        {"image_id": image_id, "category_id": c, "bbox": gts[0]["bbox"], "score": 1.0},
        {"image_id": image_id, "category_id": c, "bbox": far, "score": 0.5},
        {"image_id": image_id, "category_id": c, "bbox": gts[1]["bbox"], "score": 0.25},
        {"image_id": image_id, "category_id": n, "bbox": far, "score": 2.0},
        {"image_id": image_id, "category_id": unlisted, "bbox": far, "score": 3.0},
    ]
    ap = {k: 1.0 for k in {a["category_id"] for a in annotations.data["annotations"]}}
    ap[c] = (51 + 50 * 2 / 3) / 101
    ap[n] = g_n / (g_n + 1)
    frequency = {k: annotations.categories[k]["frequency"] for k in ap}
    metrics = score_detections(annotations, results, "bbox").metrics
    assert metrics["AP"] == pytest.approx(np.mean(list(ap.values())), abs=1e-12)
    assert metrics["AP50"] == pytest.approx(metrics["AP"], abs=1e-12)
    for group in ("r", "c", "f"):
        expected = np.mean([v for k, v in ap.items() if frequency[k] == group])
        assert metrics[f"AP{group}"] == pytest.approx(expected, abs=1e-12), group
    assert metrics["AR300"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP"] < 1.0


def test_lvis_keeps_the_300_best_detections_per_image(lvis_file: Path) -> None:
    """300 higher-scoring decoys push an image's true boxes out: the same as never having detected them."""
    annotations = load_annotations(lvis_file, "lvis")
    image_id = annotations.image_ids[0]
    image = annotations.images[image_id]
    listed = set(image["neg_category_ids"]) | {a["category_id"] for a in annotations.annotations_of(image_id)}
    unlisted = [c for c in annotations.category_ids if c not in listed][:LVIS_MAX_DETS]
    decoys = [{"image_id": image_id, "category_id": c, "bbox": [0, 0, 5, 5], "score": 0.9} for c in unlisted]
    exact = _exact(annotations, score=0.5)
    with_decoys = score_detections(annotations, exact + decoys, "bbox")
    without = score_detections(annotations, [d for d in exact if d["image_id"] != image_id], "bbox")
    assert with_decoys.dropped_by_cap == len(annotations.annotations_of(image_id)) > 0
    assert with_decoys.metrics == without.metrics
    assert with_decoys.metrics["AR300"] < 1.0


def test_cap_per_image_keeps_file_order_on_ties() -> None:
    detections = [{"image_id": 1, "score": s, "k": i} for i, s in enumerate([0.1, 0.5, 0.5, 0.9, 0.5])]
    assert [d["k"] for d in cap_per_image(detections, 3)] == [3, 1, 2]
    assert cap_per_image(detections, 10) == detections


# --------------------------------------------------------------------------------------------------
# Bad input


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_annotations_naming_unknown_images_are_an_error(coco: Path, tmp_path: Path) -> None:
    data = json.loads((coco / "instances_train2017_overlap43.json").read_text())
    data["annotations"][0]["image_id"] = 123456789
    with pytest.raises(DataError, match=r"1 annotations reference 1 image_id values \(e.g. 123456789\)"):
        load_annotations(_write(tmp_path / "a.json", data), "coco")
    data["annotations"][0]["image_id"] = data["images"][0]["id"]
    data["annotations"][1]["category_id"] = 9999
    with pytest.raises(DataError, match="category_id values"):
        load_annotations(_write(tmp_path / "b.json", data), "coco")
    del data["annotations"][2]["bbox"]
    data["annotations"][1]["category_id"] = 1
    with pytest.raises(DataError, match="annotation #2 lacks 'bbox'"):
        load_annotations(_write(tmp_path / "c.json", data), "coco")


def test_wrong_dataset_kind_is_an_error(coco: Path, lvis_file: Path) -> None:
    with pytest.raises(DataError, match="use --dataset lvis"):
        load_annotations(lvis_file, "coco")
    with pytest.raises(DataError, match="is not an LVIS file"):
        load_annotations(coco / "instances_train2017_overlap43.json", "lvis")


def test_results_for_another_dataset_are_an_error(coco: Path, lvis_file: Path, tmp_path: Path) -> None:
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    lvis = load_annotations(lvis_file, "lvis")
    other = _exact(lvis)[:5]  # LVIS image ids (val2017) are not among these 43 train2017 images
    with pytest.raises(DataError, match="image_id values .* another dataset or split"):
        score_detections(annotations, other, "bbox")
    image_id = annotations.image_ids[0]
    wrong_category = [{"image_id": image_id, "category_id": 1000, "bbox": [1, 1, 5, 5], "score": 0.3}]
    with pytest.raises(DataError, match=r"1 detections name 1 category_id values \(e.g. 1000\)"):
        score_detections(annotations, wrong_category, "bbox")


def test_malformed_results_files(coco: Path, tmp_path: Path) -> None:
    annotations = coco / "instances_train2017_overlap43.json"
    common = dict(dataset="coco", val_ann=annotations)
    with pytest.raises(DataError, match="expected a JSON list of detections"):
        _score_cli(tmp_path, predictions=annotations, **common)
    with pytest.raises(DataError, match="needs 'images', 'annotations' and 'categories'"):
        _score_cli(tmp_path, dataset="coco", val_ann=coco / "fake_results" / "fakebbox100_results_overlap43.json",
                   predictions=coco / "fake_results" / "fakebbox100_results_overlap43.json")
    (tmp_path / "latin1.json").write_bytes(b'[{"image_id": 1, "name": "caf\xe9"}]')
    with pytest.raises(DataError, match="not a readable JSON file"):
        _score_cli(tmp_path, predictions=tmp_path / "latin1.json", **common)
    with pytest.raises(DataError, match="does not exist"):
        _score_cli(tmp_path, predictions=tmp_path / "missing.json", **common)
    with pytest.raises(DataError, match=r"detection #0 lacks 'segmentation' \(needed for --iou-type segm\)"):
        _score_cli(tmp_path, predictions=coco / "fake_results" / "fakebbox100_results_overlap43.json",
                   iou_type="segm", **common)


@pytest.mark.parametrize(("box", "score", "message"), [
    ([1, 1, "5", 5], 0.3, r"bbox \[1, 1, '5', 5\]: four finite numbers"),
    ([1, 1, float("nan"), 5], 0.3, "four finite numbers"),
    ([1, 1, 5], 0.3, "four finite numbers"),
    ([1, 1, -5, 5], 0.3, "negative width or height"),
    ([1, 1, 5, 5], float("inf"), "score inf: a finite number"),
    ([1, 1, 5, 5], True, "score True"),
])
def test_boxes_and_scores_that_cannot_be_scored_are_an_error(coco: Path, box, score, message) -> None:
    """The libraries would crash on a text coordinate and silently score a NaN or negative-area box."""
    annotations = load_annotations(coco / "instances_train2017_overlap43.json", "coco")
    image_id, category = annotations.image_ids[0], next(iter(annotations.categories))
    good = {"image_id": image_id, "category_id": category, "bbox": [1, 1, 5, 5], "score": 0.3}
    bad = {**good, "bbox": box, "score": score}
    with pytest.raises(DataError, match=f"detection #1 \\(image_id {image_id}\\) has .*{message}"):
        score_detections(annotations, [good, bad], "bbox")


def test_scoring_needs_predictions_or_an_encoder(coco: Path, tmp_path: Path) -> None:
    with pytest.raises(VitoError, match="--predictions RESULTS.json .* or --encoder ENC"):
        _score_cli(tmp_path, dataset="coco", val_ann=coco / "instances_train2017_overlap43.json")


def test_images_are_found_by_id_whatever_the_file_name(tmp_path: Path) -> None:
    """LVIS v0.5 says COCO_val2014_%012d.jpg; the COCO 2017 folder holds %012d.jpg."""
    (tmp_path / "000000266409.jpg").write_bytes(b"x")
    (tmp_path / "COCO_val2014_000000000042.jpg").write_bytes(b"x")
    lvis_v05 = {"id": 266409, "file_name": "COCO_val2014_000000266409.jpg"}
    assert image_file(tmp_path, lvis_v05) == tmp_path / "000000266409.jpg"
    assert image_file(tmp_path, {"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}).name.startswith("COCO_")
    lvis_v1 = {"id": 7, "coco_url": "http://images.cocodataset.org/val2017/000000000007.jpg"}
    assert image_file(tmp_path, lvis_v1) is None
    (tmp_path / "000000000007.jpg").write_bytes(b"x")
    assert image_file(tmp_path, lvis_v1) == tmp_path / "000000000007.jpg"


def test_cli_scores_a_results_file(coco: Path, tmp_path: Path, capsys) -> None:
    from vito.cli import main

    out = tmp_path / "cli"
    assert main(["eval", "detect", "--dataset", "coco", "--val-ann", str(coco / "instances_train2017_overlap43.json"),
                 "--predictions", str(coco / "fake_results" / "fakebbox100_results_overlap43.json"),
                 "--out", str(out)]) == 0
    data = json.loads((out / "result.json").read_text())
    assert round(data["metrics"]["AP"]["value"], 6) == README_STATS["bbox"][0]
    assert (out / "result.md").is_file()


def test_detect_results_with_an_unhashable_image_id_are_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(tiny_instances()))
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
    data = tiny_instances()
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
    data = tiny_instances()
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
