"""Fake registered evaluations for the report's unit tests: cheap, counting their runs, failing on demand."""

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from vito.errors import DataError, VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.registry import REGISTRY, Evaluation, discover
from vito.eval.core.result import Coverage, Metric, Result


class Calls(list):
    """Every ``(evaluation, encoder name or None, settings)`` a fake evaluation ran with, in order."""

    def of(self, evaluation: str) -> list:
        return [call for call in self if call[0] == evaluation]


CALLS = Calls()


def _score(encoder, salt: str) -> float:
    name = "reference" if encoder is None else encoder.name
    return (sum(map(ord, name + salt)) % 97) / 97


@dataclass
class LinearSettings:
    train: Path = field(metadata={"help": "training images"})
    epochs: int = field(default=1, metadata={"help": "epochs"})


class FakeLinear(Evaluation):
    name = "linear"
    Settings = LinearSettings
    group = "scene"

    def run(self, encoder, settings, out_dir):
        CALLS.append((self.name, encoder.name, settings))
        if not Path(settings.train).is_dir():
            raise DataError(f"image folder not found: {settings.train}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "linear_head.pt").write_text(f"head of {encoder.name} epochs {settings.epochs}")
        return Result(self.name, {"top1": Metric(_score(encoder, "linear"), "proportion", "top-1")},
                           {"train": str(settings.train), "epochs": settings.epochs}, Coverage(4, 4),
                           artifacts={"head": "linear_head.pt"})


@dataclass
class KnnSettings:
    train: Path = field(metadata={"help": "training images"})
    k: int = field(default=20, metadata={"help": "neighbours"})
    used: int = field(default=4, metadata={"help": "images the fake pretends it could read (of 4)"})


class FakeKnn(Evaluation):
    name = "knn"
    Settings = KnnSettings
    group = "scene"

    def run(self, encoder, settings, out_dir):
        CALLS.append((self.name, encoder.name, settings))
        if not Path(settings.train).is_dir():
            raise DataError(f"image folder not found: {settings.train}")
        top1 = _score(encoder, f"knn{settings.k}")
        return Result(self.name, {"top1": Metric(top1, "proportion", "top-1"),
                                       "top1_k": Metric(top1, "proportion", "top-1"),  # an alias: shown once
                                       "count": Metric(settings.used, "count", "images")},
                           {"train": str(settings.train), "k": settings.k, "used": settings.used},
                           Coverage(settings.used, 4, "fake"))


@dataclass
class RobustSettings:
    root: Path = field(metadata={"help": "images"})
    classifier: str = field(default="own", metadata={"help": "own or a head file"})


class FakeRobust(Evaluation):
    name = "imagenet-a"
    Settings = RobustSettings
    uses_classifier = True
    group = "ood"

    def run(self, encoder, settings, out_dir):
        CALLS.append((self.name, encoder.name, settings))
        if settings.classifier != "own":
            Path(settings.classifier).read_text()  # the head must exist when the evaluation runs
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 40), (200, 30, 30)).save(out_dir / "errors.png")
        return Result(self.name, {"top1": Metric(_score(encoder, settings.classifier), "proportion"),
                                       "delta": Metric(-0.25, "signed", "Δ accuracy"),
                                       "undefined": Metric(None, "value")},
                           {"root": str(settings.root), "classifier": settings.classifier}, Coverage(2, 2),
                           pictures=["errors.png"])


@dataclass
class DavisSettings:
    davis_root: Path = field(metadata={"help": "DAVIS folder"})
    results: Path | None = field(default=None, metadata={"help": "score this results folder"})


class FakeDavis(Evaluation):
    name = "davis"
    Settings = DavisSettings
    needs_encoder = "optional"
    group = "video"

    def run(self, encoder, settings, out_dir):
        CALLS.append((self.name, None if encoder is None else encoder.name, settings))
        if encoder is None and settings.results is None:
            raise VitoError("give an encoder or --results")
        if not Path(settings.davis_root).is_dir():
            raise DataError(f"DAVIS root not found: {settings.davis_root}")
        return Result(self.name, {"J&F-Mean": Metric(_score(encoder, "davis"), "proportion", "J&F")},
                           {"davis_root": str(settings.davis_root),
                            "results": None if settings.results is None else str(settings.results)},
                           Coverage(3, 3))


@dataclass
class ScoresSettings:
    predictions: Path = field(metadata={"help": "a method's predictions"})


class FakeScores(Evaluation):
    """Scoring only, like `vito eval segment --predictions`: no encoder rows, reference rows only."""

    name = "fake-scores"
    Settings = ScoresSettings
    needs_encoder = False
    group = "dense"

    def run(self, encoder, settings, out_dir):
        CALLS.append((self.name, encoder, settings))
        return Result(self.name, {"mIoU": Metric(0.5, "proportion", "mIoU")},
                           {"predictions": str(settings.predictions)}, Coverage(1, 1))


FAKES = (FakeLinear, FakeKnn, FakeRobust, FakeDavis, FakeScores)


@pytest.fixture
def fakes(monkeypatch):
    """The fake evaluations under the real names, and encoders that 'load' without building a network."""
    discover()  # the real ones register first; the fakes then replace them for this test only
    for cls in FAKES:
        monkeypatch.setitem(REGISTRY, cls.name, cls)
    loads = []

    def load(spec):
        if spec.weights is not None and Path(spec.weights).read_bytes() == b"broken":
            raise VitoError(f"weights in {spec.weights} do not fit {spec.encoder}")
        loads.append(spec.encoder)
        label = spec.encoder if spec.weights is None else f"{spec.encoder}:{Path(spec.weights).name}"
        return SimpleNamespace(name=label)

    monkeypatch.setattr(EncoderSpec, "load", load)
    CALLS.clear()
    yield SimpleNamespace(calls=CALLS, loads=loads)
    CALLS.clear()
