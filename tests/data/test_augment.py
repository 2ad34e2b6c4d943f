from __future__ import annotations

import os
import signal
import time

import cv2
import numpy as np
import pytest
import torch

from vito.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PhotometricAugment,
    RandomResizedCropFlip,
    normalize,
    resize_into,
)


def test_crop_flip_shape_and_reproducible():
    crop = RandomResizedCropFlip(size=32)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    a = crop(image, np.random.default_rng(5))
    b = crop(image, np.random.default_rng(5))
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, crop(image, np.random.default_rng(6)))


@pytest.mark.parametrize("min_scale", [0.4, 0.08])
def test_crop_box_respects_scale_and_ratio(min_scale):
    crop = RandomResizedCropFlip(size=32, scale=(min_scale, 1.0))
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(2000):
        top, left, h, w = crop.sample_box(90, 160, rng)
        assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 160
        fractions.append(h * w / (90 * 160))
    fractions = np.array(fractions)
    assert fractions.min() >= min_scale * 0.97  # rounding of the box to whole pixels
    assert fractions.min() < min_scale + 0.05  # the whole range is used


def test_flip_happens_half_the_time():
    crop = RandomResizedCropFlip(size=8, scale=(1.0, 1.0), ratio=(16 / 9, 16 / 9))
    image = torch.arange(9 * 16, dtype=torch.uint8).view(1, 9, 16).expand(3, -1, -1)
    rng = np.random.default_rng(1)
    outputs = [crop(image, rng) for _ in range(400)]
    flipped = np.mean([o[0, 0, 0] > o[0, 0, -1] for o in outputs])
    assert 0.4 < flipped < 0.6


def test_view_dependent_probabilities():
    aug = PhotometricAugment(size=64)
    views = torch.arange(3).repeat(2000)
    params = aug.sample_params(views, torch.Generator().manual_seed(0))
    rate = lambda flags, v: flags[views == v].float().mean().item()  # noqa: E731
    assert rate(params.blur, 0) == 1.0
    assert rate(params.blur, 1) == pytest.approx(0.1, abs=0.03)
    assert rate(params.blur, 2) == pytest.approx(0.5, abs=0.04)
    assert rate(params.solarize, 0) == 0.0
    assert rate(params.solarize, 1) == pytest.approx(0.2, abs=0.03)
    assert rate(params.solarize, 2) == 0.0
    assert params.jitter.float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert params.grayscale.float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0
    assert params.brightness.abs().max() <= 0.4 and params.hue.abs().max() <= 0.1
    # every image gets its own order of the four colour operations
    assert len({tuple(o) for o in params.order.tolist()}) == 24


def test_photometric_output_and_reproducibility():
    aug = PhotometricAugment(size=32)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    views = torch.arange(6) % 3
    a = aug(images, views, torch.Generator().manual_seed(1))
    b = aug(images, views, torch.Generator().manual_seed(1))
    c = aug(images, views, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    low = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD)
    high = (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD)
    assert a.min() >= low - 1e-4 and a.max() <= high + 1e-4


def test_operations_do_what_they_say():
    aug = PhotometricAugment(size=32)
    images = torch.rand(4, 3, 32, 32)
    params = aug.sample_params(torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
    off = {k: torch.zeros_like(v) if v.dtype == torch.bool else v for k, v in vars(params).items()}
    assert torch.allclose(aug.apply(images, type(params)(**off)), images)  # nothing applied: unchanged
    gray = type(params)(**{**off, "grayscale": torch.ones(4, dtype=torch.bool)})
    out = aug.apply(images, gray)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    solar = type(params)(**{**off, "solarize": torch.ones(4, dtype=torch.bool)})
    assert torch.allclose(aug.apply(images, solar), torch.where(images < 0.5, images, 1 - images))
    blur = type(params)(**{**off, "blur": torch.ones(4, dtype=torch.bool)})
    assert aug.apply(images, blur).std() < images.std()  # blurring noise lowers its variance


def test_normalize_uint8_and_float_agree():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    a = normalize(images)
    b = normalize(images.float() / 255)
    assert torch.allclose(a, b)
    expected = (images[0, 1, 0, 0].item() / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert a[0, 1, 0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_a_worker_forked_right_after_the_main_process_cropped_does_not_deadlock():
    """OpenCV's thread pool does not survive fork: with it running, 56 of 60 such children hung in their first
    OpenCV call (the suite once hung so in a DataLoader worker). vito keeps OpenCV on one thread."""
    image = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    out = np.empty((224, 224, 3), np.uint8)
    hung = 0
    for _ in range(10):
        resize_into(image[:330, :300], out)  # blurs, then resizes: the operations a worker runs
        pid = os.fork()
        if pid == 0:  # the child: what a DataLoader worker did first (user code may still do it), then a crop
            cv2.setNumThreads(1)
            resize_into(image[:330, :300], out)
            os._exit(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.01)
        if time.monotonic() >= deadline:
            hung += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert hung == 0


def test_make_views_draws_every_view_from_the_generator():
    from vito.config import load_config
    from vito.data.augment import make_views

    config = load_config("demo", ["data.image_size=32"])
    crops = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    views = make_views({"views": crops}, config, torch.Generator().manual_seed(3))
    assert views.shape == (2, 3, 3, 32, 32) and views.dtype == torch.float32
    assert torch.equal(views, make_views(crops, config, torch.Generator().manual_seed(3)))  # the batch or its crops
    assert not torch.equal(views, make_views(crops, config, torch.Generator().manual_seed(4)))
    # views of a clip are clip-major rows with their view's probabilities: view 0 is always blurred (BYOL p=1)
    augment = PhotometricAugment(size=32)
    params = augment.sample_params(torch.arange(3).repeat(2), torch.Generator().manual_seed(3))
    expected = normalize(augment.apply(crops.flatten(0, 1).float() / 255, params)).unflatten(0, (2, 3))
    torch.testing.assert_close(views, expected)
    assert params.blur[0::3].all()
