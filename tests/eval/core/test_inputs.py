"""The one input layer: what is read, what is skipped (and listed), and what is never read twice."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import UNREADABLE, unreadable
from vito.data.images import UnreadableImage, read_image
from vito.errors import DataError
from vito.eval.core.encoders import load_encoder
from vito.eval.core.features import cached_features
from vito.eval.core.inputs import EvalTransform, ImageFiles, ImageFolder


def test_a_one_pixel_image_is_evaluated(tmp_path) -> None:
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    view = EvalTransform(8)(read_image(tmp_path / "dot.png"))
    assert view.shape == (3, 8, 8) and view[0].min() > 2  # red, normalised: (1 - 0.485) / 0.229


def test_sixteen_bit_greys_are_scaled_not_saturated(tmp_path) -> None:
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    assert read_image(tmp_path / "grey16.png")[:, 0, 0].tolist() == [128, 128, 128]  # not 255


def test_a_sixteen_bit_image_is_evaluated_as_its_eight_bit_grey(tmp_path) -> None:
    Image.fromarray(np.full((6, 6), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    Image.new("L", (6, 6), 128).save(tmp_path / "grey8.png")
    sixteen, eight = ImageFiles([tmp_path / "grey16.png", tmp_path / "grey8.png"], transform=EvalTransform(4))
    assert sixteen[3] == eight[3] == "" and torch.equal(sixteen[0], eight[0])


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_every_unreadable_image_is_a_skip_listed_with_its_reason(tmp_path, kind) -> None:
    path = unreadable(kind, tmp_path / "x.png")
    image, label, name, reason = ImageFiles([path], labels=[3])[0]
    assert image is None and (label, name) == (3, str(path)) and UNREADABLE[kind] in reason


def test_decompression_bombs_are_skipped_with_their_reason(tmp_path, monkeypatch) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: above the limit, below twice it
    with pytest.raises(UnreadableImage, match="decompression-bomb"):
        read_image(tmp_path / "big.png")
    image, _, path, reason = ImageFiles([tmp_path / "big.png"])[0]
    assert image is None and "decompression-bomb" in reason


def test_symlink_loops_are_not_followed(tmp_path) -> None:
    folder = tmp_path / "root" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (tmp_path / "root" / "dog").mkdir()
    (tmp_path / "root" / "dog" / "cat-again").symlink_to(folder, target_is_directory=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "root" / "dog" / "b.png")
    dataset = ImageFolder(tmp_path / "root")
    assert dataset.classes == ["cat", "dog"]
    assert [sum(label == c for label in dataset.labels) for c in range(2)] == [1, 2]  # not 21 copies of a.png


def test_a_corrupt_feature_cache_is_recomputed_with_a_warning(tmp_path, caplog) -> None:
    for c in range(2):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        Image.new("RGB", (16, 16), (100 * c, 50, 50)).save(tmp_path / "data" / f"c{c}" / "x.png")
    encoder = load_encoder("timm:resnet18")
    first = cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=16)
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated by a killed job on another file system
    with caplog.at_level(logging.WARNING):
        again = cached_features(encoder, tmp_path / "data", tmp_path / "cache", image_size=16)
    assert "unreadable" in caplog.text and torch.allclose(first.features, again.features)


def test_davis_errors_name_the_sequence_and_the_file(tmp_path) -> None:
    from vito.eval.video.davis_scoring import score_results

    for kind in ("JPEGImages", "Annotations"):
        (tmp_path / "davis" / kind / "480p" / "swan").mkdir(parents=True)
    for t in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "davis" / "JPEGImages" / "480p" / "swan" / f"{t:05d}.jpg")
        Image.new("L", (8, 8)).save(tmp_path / "davis" / "Annotations" / "480p" / "swan" / f"{t:05d}.png")
    (tmp_path / "results" / "swan").mkdir(parents=True)
    (tmp_path / "results" / "swan" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"DAVIS sequence swan: .*00001\.png"):
        score_results(tmp_path / "davis", tmp_path / "results")
