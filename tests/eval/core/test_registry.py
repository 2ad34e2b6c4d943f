"""Contract over every registered evaluation (as timm tests every registered model).

Each evaluation: has a `vito eval NAME` subcommand whose options are exactly its Settings fields (plus the
encoder options and --out); refuses `timm:resnet18` without --weights/--random-init with the clear message;
and, on a cheap case, writes a Result whose proportions lie in [0, 1], which records coverage and settings and
holds the metric the evaluation names as its headline.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vito.cli import build_parser, main
from vito.errors import VitoError
from vito.eval.core.registry import discover
from vito.eval.core.result import read_result
from vito.eval.core.running import run_evaluation
from vito.eval.probes.heads import save_linear_head
from vito.schema import flag_name

REGISTRY = discover()
ENCODER_OPTIONS = {"--encoder", "--weights", "--random-init", "--device", "--precision"}
OURS = ("knn", "linear", "davis", "ucf101", "model-vs-human", "imagenet-a", "imagenet-vid-robust",
        "imagenet-3dcc", "clickme")
SCORING_ONLY = ("segment", "detect")  # fine-tunes, run here in their scoring mode (--predictions)
ENCODER = ["--encoder", "timm:resnet18", "--random-init", "--device", "cpu"]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    evals = next(a for a in commands.choices["eval"]._actions if isinstance(a, argparse._SubParsersAction))
    return evals.choices[name]


def test_the_nine_evaluations_are_registered() -> None:
    assert set(OURS) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_cli_options_are_the_settings_fields(name: str) -> None:
    cls = REGISTRY[name]
    parser = _subparser(name)
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help", "--out"}
    positional = {a.dest for a in parser._actions if not a.option_strings}
    fields = [f for f in dataclasses.fields(cls.Settings) if not f.metadata.get("cli", {}).get("hidden")]
    expected = {flag_name(f) for f in fields if not f.metadata.get("cli", {}).get("positional")}
    encoder = ENCODER_OPTIONS if cls.needs_encoder else set()
    assert flags == expected | encoder
    assert positional == {f.name for f in fields if f.metadata.get("cli", {}).get("positional")}
    assert all(f.metadata.get("help") for f in fields), "every setting has help text"


def _images(root: Path, shared_data: Path, classes: int = 2, per_class: int = 2) -> Path:
    sources = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            shutil.copy(sources[c * per_class + i], root / f"class{c}" / f"{i}.jpg")
    return root


def _imagenet_a(root: Path, shared_data: Path) -> Path:
    from vito.eval.robustness.imagenet_a import imagenet_a_classes

    for wnid in imagenet_a_classes()[1][:2]:
        (root / wnid).mkdir(parents=True)
        shutil.copy(next((shared_data / "imagenet-sample-images").glob(f"{wnid}_*")), root / wnid / "a.jpg")
    return root


def _head(tmp: Path) -> str:
    torch.manual_seed(0)
    save_linear_head(tmp / "head.pt", torch.nn.Linear(512, 1000))
    return str(tmp / "head.pt")


def _clickme(folder: Path) -> Path:
    folder.mkdir(parents=True)
    maps = np.zeros((2, 32, 32), np.uint8)
    maps[:, :16, :16] = 200
    np.savez(folder / "val.npz", image=np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
             heatmap=maps, label=np.arange(2))
    return folder


def _ucf(tmp: Path, shared_data: Path) -> list[str]:
    splits = tmp / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    for name in ("ApplyEyeMakeup", "Archery"):
        (tmp / "videos" / name).mkdir(parents=True)
        (tmp / "videos" / name / f"v_{name}_g01_c01.avi").symlink_to(shared_data / "ucf101" / "clips" / "test.avi")
    lines = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n"
    (splits / "trainlist01.txt").write_text(lines)
    (splits / "testlist01.txt").write_text(lines)
    return ["--root", str(tmp / "videos"), "--splits", str(splits), "--mode", "frozen", "--epochs", "1",
            "--batch-size", "2", "--train-clips", "1", "--num-workers", "0", "--image-size", "32", "--test-clips", "1"]


def _voc_predictions(tmp: Path, data: Path) -> list[str]:
    from tests.eval.dense.segmentation.layouts import VOC_IDS, build_voc

    root = build_voc(data, tmp / "voc")
    (tmp / "pred").mkdir()
    for i in VOC_IDS:  # the ground truth as predictions
        (tmp / "pred" / f"{i}.png").symlink_to(data / "segmentation" / "voc2012" / "SegmentationClass" / f"{i}.png")
    return ["--dataset", "voc", "--root", str(root), "--predictions", str(tmp / "pred")]


def _case(name: str, tmp: Path, data: Path) -> list[str]:
    """A cheap command line (everything but --out) for each of the nine evaluations and the two scoring modes."""
    small = ["--image-size", "32"]
    coco = data / "detection" / "coco"
    cases: dict[str, Callable[[], list[str]]] = {
        "segment": lambda: _voc_predictions(tmp, data),
        "detect": lambda: ["--dataset", "coco", "--val-ann", str(coco / "instances_train2017_overlap43.json"),
                           "--predictions", str(coco / "fake_results" / "fakebbox100_results_overlap43.json")],
        "knn": lambda: [*ENCODER, "--train", str(_images(tmp / "train", data)), "--val",
                        str(_images(tmp / "val", data)), "--num-workers", "0", *small, "--k", "1", "3"],
        "linear": lambda: [*ENCODER, "--train", str(_images(tmp / "train", data)), "--val",
                           str(_images(tmp / "val", data)), "--num-workers", "0", *small, "--lrs", "0.1",
                           "--epochs", "1"],
        "davis": lambda: ["--davis-root", str(data / "davis2016_sample"), "--results",
                          str(data / "davis2016_sample" / "Results" / "osvos-davis2017"), "--sequences", "blackswan"],
        "ucf101": lambda: [*ENCODER, *_ucf(tmp, data)],
        "model-vs-human": lambda: ["--responses", str(sorted((data / "model-vs-human" / "raw-data" / "edge")
                                                             .glob("*.csv"))[0]),
                                   "--raw-data", str(data / "model-vs-human" / "raw-data"), "--datasets", "edge"],
        "imagenet-a": lambda: [*ENCODER, "--classifier", _head(tmp), "--root", str(_imagenet_a(tmp / "a", data)),
                               *small],
        "imagenet-vid-robust": lambda: [*ENCODER, "--classifier", _head(tmp), "--root",
                                        str(data / "imagenet-vid-robust"), *small, "--batch-size", "21"],
        "imagenet-3dcc": lambda: [*ENCODER, "--classifier", _head(tmp), "--root",
                                  str(_imagenet_a(tmp / "3dcc" / "fog_3d" / "1", data).parents[1]),
                                  "--clean-accuracy", "0.5", *small],
        "clickme": lambda: [*ENCODER, "--classifier", _head(tmp), "--root", str(_clickme(tmp / "clickme")), *small],
    }
    return cases[name]()


@pytest.mark.parametrize("name", OURS)
def test_each_evaluation_writes_an_honest_result(name: str, tmp_path, shared_data) -> None:
    argv = _case(name, tmp_path, shared_data)
    assert main(["eval", name, *argv, "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    assert result.evaluation == name and result.metrics
    assert REGISTRY[name].headline in result.metrics, "the headline is a metric the evaluation produces"
    for key, metric in result.metrics.items():
        if metric.kind == "proportion" and metric.value is not None:
            assert 0.0 <= metric.value <= 1.0, key
    assert result.coverage.expected >= result.coverage.used > 0
    settings = REGISTRY[name].Settings
    unused = REGISTRY[name]().unused_settings(settings(**{k: v for k, v in result.settings.items()
                                                         if k in {f.name for f in dataclasses.fields(settings)}}),
                                              "--encoder" in argv)
    assert {f.name for f in dataclasses.fields(settings)} - unused.keys() <= set(result.settings)
    assert not unused.keys() & set(result.settings)  # what the mode does not use is not recorded
    assert "torch" in result.versions and result.seconds > 0
    if "--encoder" in argv:
        assert result.encoder["spec"] == "timm:resnet18" and result.encoder["random_init"] is True
        assert len(result.encoder["identity"]) == 16


def test_every_evaluation_declares_a_headline_and_has_a_case_that_checks_it() -> None:
    """A new evaluation without ``headline`` fails here, and one without a cheap case here too (so its
    headline is checked against the metrics its Result really holds, above and below)."""
    for name, cls in REGISTRY.items():
        assert isinstance(getattr(cls, "headline", None), str) and cls.headline, f"{name} declares no headline"
    assert set(REGISTRY) == set(OURS) | set(SCORING_ONLY)


@pytest.mark.parametrize("name", SCORING_ONLY)
def test_scoring_modes_hold_their_headline(name: str, tmp_path, shared_data) -> None:
    assert main(["eval", name, *_case(name, tmp_path, shared_data), "--out", str(tmp_path / "out")]) == 0
    result = read_result(tmp_path / "out")
    headline = result.metrics[REGISTRY[name].headline]
    assert headline.value is not None and 0 < headline.value <= 1 and headline.kind == "proportion"


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.needs_encoder))
def test_an_outside_architecture_needs_weights_or_random_init(name: str, tmp_path, capsys) -> None:
    parser = _subparser(name)
    required = [a for a in parser._actions if a.required and a.option_strings and a.dest != "encoder"]
    argv = ["eval", name, "--encoder", "timm:resnet18", "--out", str(tmp_path / "out")]
    for action in required:
        value = str(list(action.choices)[0]) if action.choices else str(tmp_path / "unused")
        argv += [action.option_strings[0], value] if action.dest != "out" else []
    positional = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    argv += [str(tmp_path / "unused") for _ in positional]
    assert main(argv) == 2
    assert "timm:resnet18 needs --weights FILE (or --random-init" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_attention_takes_the_same_encoder_path(tmp_path, capsys) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["attention", "--encoder", "timm:resnet18", str(image), "--out", str(tmp_path / "o")]) == 2
    assert "needs --weights FILE (or --random-init" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Every setting is used, or refused: a value accepted and not applied would be recorded as if it shaped the number


def _reads(cls: type, settings: object, out: Path) -> set[str]:
    """The Settings fields ``cls().run`` reads (scoring-only: no encoder), through a recording copy."""
    read: set[str] = set()
    names = {f.name for f in dataclasses.fields(settings)}

    class Recording(type(settings)):
        def __getattribute__(self, name: str):
            if name in names:
                read.add(name)
            return object.__getattribute__(self, name)

    recording = Recording(**{name: getattr(settings, name) for name in names})
    cls().run(None, recording, out)
    return read


def _scoring_cases(shared_data: Path) -> dict[str, dict]:
    """Every scoring-only mode that runs in seconds on the shared data, with its settings."""
    davis = shared_data / "davis2016_sample"
    raw = shared_data / "model-vs-human" / "raw-data" / "edge"
    return {
        "davis --results": ("davis", {"davis_root": davis, "results": davis / "Results" / "osvos-davis2017",
                                      "sequences": ["car-shadow"], "max_frames": 4}),
        "model-vs-human --responses": ("model-vs-human", {"raw_data": raw,
                                                          "responses": raw / "edge_subject-01_session_1.csv"}),
        "model-vs-human --humans": ("model-vs-human", {"raw_data": raw, "humans": True}),
    }


@pytest.mark.parametrize("case", ["davis --results", "model-vs-human --responses", "model-vs-human --humans"])
def test_every_setting_of_a_scoring_mode_is_read_or_refused(shared_data, tmp_path, case) -> None:
    name, values = _scoring_cases(shared_data)[case]
    cls = REGISTRY[name]
    settings = cls.Settings(**values)
    unused = cls().unused_settings(settings, has_encoder=False)
    fields = {f.name for f in dataclasses.fields(settings)}
    assert not fields - unused.keys() - _reads(cls, settings, tmp_path), "a setting neither read nor refused"
    for field_name in unused:  # each unused one set to something else is refused before anything runs
        flag = flag_name(next(f for f in dataclasses.fields(settings) if f.name == field_name))
        other = _another_value(settings, field_name)
        changed = dataclasses.replace(settings, **{field_name: other})
        with pytest.raises(VitoError, match=f"{flag} is not used here"):
            run_evaluation(name, changed, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()


def _another_value(settings: object, name: str) -> object:
    value = getattr(settings, name)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return Path("elsewhere") if value is None or isinstance(value, Path) else f"{value}-other"


def test_davis_scoring_applies_max_frames_and_records_only_what_it_used(shared_data, tmp_path) -> None:
    davis = shared_data / "davis2016_sample"
    results = davis / "Results" / "osvos-davis2017"
    assert main(["eval", "davis", "--davis-root", str(davis), "--results", str(results), "--sequences",
                 "car-shadow", "--max-frames", "12", "--out", str(tmp_path / "twelve")]) == 0
    result = read_result(tmp_path / "twelve")
    assert result.coverage.used == 10 and result.coverage.partial  # frames 2..11 of car-shadow's 40
    assert "only the first 12 frames" in result.coverage.note and result.settings["max_frames"] == 12
    assert not {"stage", "topk", "temperature", "radius", "context", "short_side"} & result.settings.keys()
    assert "topk" not in (tmp_path / "twelve" / "result.md").read_text()
    assert main(["eval", "davis", "--davis-root", str(davis), "--results", str(results), "--topk", "5",
                 "--out", str(tmp_path / "topk")]) == 2
    assert not (tmp_path / "topk").exists()
