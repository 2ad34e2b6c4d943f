"""The loader's CPU path from shards: few small reads per clip, decode into one array, one OpenCV resize per crop
into one preallocated batch; compared with the original path (per-frame torchvision crops), which
``tests/data/original_path.py`` recomputes from the stored JPEG bytes (the ``shards`` fixture is in conftest.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.data.original_path import old_batch
from vito.config import DataConfig
from vito.data.augment import RandomResizedCropFlip, resize_into
from vito.data.jpeg import jpeg_size
from vito.data.pretrain_batches import PretrainBatches, build_pretrain_loader
from vito.data.shards.reader import ShardSource


def test_views_within_2_of_255_of_the_original_path(shards):
    """At the stored short side (``vito prepare``'s default, the training preset's): one resize per crop."""
    size = 224
    data = DataConfig(num_views=3, image_size=size, decode_short_side=256, batch_size=6)
    loader = PretrainBatches(ShardSource(shards), data, seed=3)
    errors = []
    for step in range(4):
        new, old = loader.batch(step)["views"], old_batch(loader, step)
        assert new.shape == old.shape == (6, 3, 3, size, size) and new.dtype == torch.uint8
        errors.append((new.float() - old.float()).abs().mean(dim=(-3, -2, -1)).flatten())
    errors = torch.cat(errors)
    assert errors.max() <= 2.0, errors.max()  # per image, in units of 1/255
    assert errors.mean() < 1.0
    assert errors.max() > 0  # a different resize: the comparison is not with itself


def test_resize_into_matches_torchvision_and_flips_in_place():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:200, 0:300]
    waves = [np.sin(x / p + y / q + c) for p, q, c in [(9, 23, 0), (17, 7, 1), (31, 13, 2)]]
    image = (np.stack(waves, axis=-1) * 100 + 128).round().astype(np.uint8)  # [H, W, 3], smooth
    for h, w in [(200, 300), (120, 90), (60, 80), (200, 120)]:  # shrink (filtered, area), enlarge, mixed
        top, left = int(rng.integers(0, 201 - h)), int(rng.integers(0, 301 - w))
        crop = image[top : top + h, left : left + w]
        expected = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float(),
                                 size=(64, 64), mode="bilinear", antialias=True).round()[0].permute(1, 2, 0)
        out = np.zeros((64, 64, 3), np.uint8)
        resize_into(crop, out)
        assert np.abs(out - expected.numpy()).mean() < 1.0, (h, w)
        flipped = np.zeros_like(out)
        resize_into(crop, flipped, flip=True)
        assert np.array_equal(flipped, out[:, ::-1])


def test_crop_into_draws_like_the_tensor_path():
    """Same rng draws (box, then flip) as ``__call__``: the stream of later draws is unchanged."""
    crop = RandomResizedCropFlip(size=16)
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    out = np.empty((16, 16, 3), np.uint8)
    for _ in range(20):
        crop.crop_into(image, a, out)
        crop(torch.from_numpy(image).permute(2, 0, 1), b)
    assert a.random() == b.random()


def steps(folder, data: DataConfig, start: int, count: int) -> list[dict]:
    loader = build_pretrain_loader(folder, data, seed=5, start_step=start)
    return list(itertools.islice(iter(loader), count))


def test_batches_identical_for_any_worker_count_and_across_resume(shards):
    base = DataConfig(num_views=3, image_size=64, decode_short_side=96, batch_size=4, window_seconds=1.0)
    runs = {k: steps(shards, DataConfig(**{**vars(base), "num_workers": k}), 0, 6) for k in (0, 1, 3)}
    resumed = steps(shards, DataConfig(**{**vars(base), "num_workers": 2}), 3, 3)
    reference = runs[0]
    assert [b["step"] for b in reference] == list(range(6))
    for batches in [*runs.values(), reference[:3] + resumed]:
        for got, want in zip(batches, reference):
            assert got["step"] == want["step"]
            assert torch.equal(got["views"], want["views"]) and torch.equal(got["video_index"], want["video_index"])
    assert not torch.equal(reference[0]["views"], reference[1]["views"])


def test_a_damaged_frame_is_a_data_error_of_that_clip(shards, tmp_path):
    source = ShardSource(shards)
    clip = source.clip(1)
    offset, size = clip["frames"][0]
    data = (shards / clip["tar"]).read_bytes()
    assert jpeg_size(data[offset : offset + size]) == (256, 340)  # demo.mp4 is 340x256
    with pytest.raises(ValueError, match="truncated"):
        jpeg_size(data[offset : offset + size - 10])
    with pytest.raises(ValueError, match="not a JPEG"):
        jpeg_size(b"\x00" * 100)
