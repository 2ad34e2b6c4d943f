"""Views decoded on the training device (``data.decode_device=cuda``), run here on CPU tensors: the workers'
JPEG batches carry the CPU path's clips, boxes and flips, and decoding them gives the CPU path's views."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.data.original_path import old_batch
from vito.config import DataConfig
from vito.data.gpu_decode import JpegBatches, decode_views, resolve_decode_device
from vito.data.pretrain_batches import PretrainBatches
from vito.data.shards.reader import ShardSource
from vito.errors import VitoError

DATA = DataConfig(num_views=3, image_size=224, decode_short_side=256, batch_size=6)


def per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).abs().mean(dim=(-3, -2, -1)).flatten()


def test_device_path_on_cpu_tensors_matches_the_cpu_path(shards):
    source = ShardSource(shards)
    cpu, device = PretrainBatches(source, DATA, seed=3), JpegBatches(source, DATA, seed=3)
    for step in range(3):
        jpegs, decoded = device.batch(step), cpu.batch(step)
        assert jpegs["step"] == step and torch.equal(jpegs["video_index"], decoded["video_index"])
        assert jpegs["jpeg_lengths"].sum() == jpegs["jpegs"].numel() and len(jpegs["boxes"]) == 6 * 3
        views = decode_views(jpegs, DATA.image_size, "cpu")
        assert views.shape == decoded["views"].shape and views.dtype == torch.uint8
        assert per_image(views, decoded["views"]).max() <= 2.0  # the CPU path's OpenCV resize
        assert per_image(views, old_batch(cpu, step)).max() <= 0.5  # the per-frame torchvision path it mirrors
        assert torch.equal(device.batch(step)["jpegs"], jpegs["jpegs"])  # a pure function of the step


def test_other_short_side_resizes_on_the_device(shards):
    data = DataConfig(num_views=2, image_size=96, decode_short_side=128, batch_size=3)
    source = ShardSource(shards)
    jpegs = JpegBatches(source, data, seed=1).batch(0)
    assert jpegs["frame_sizes"][:, 0].min() == 128  # every stored frame is landscape here
    views = decode_views(jpegs, 96, "cpu")
    # two different antialiasing filters for the halving (libjpeg's DCT scaling on CPU, torchvision's triangle
    # here): on sam2's textured blocks up to ~6/255 per view, ~1.5/255 on the other videos (docs/data_path.md)
    assert per_image(views, PretrainBatches(source, data, seed=1).batch(0)["views"]).max() <= 8.0


def test_damaged_frames_are_counted_skips_replaced_like_on_cpu(shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(shards, broken)
    source = ShardSource(broken)
    clip = source.clip(1)
    with open(broken / clip["tar"], "r+b") as handle:  # every frame of clip 1 loses its end marker
        for offset, size in clip["frames"]:
            handle.seek(offset + size - 2)
            handle.write(b"\0\0")
    data = DataConfig(num_views=2, image_size=64, decode_short_side=256, batch_size=3)
    cpu, device = PretrainBatches(ShardSource(broken), data, seed=0), JpegBatches(ShardSource(broken), data, seed=0)
    for step in range(3):
        jpegs, decoded = device.batch(step), cpu.batch(step)
        assert torch.equal(jpegs["video_index"], decoded["video_index"])
        assert 1 not in jpegs["video_index"].tolist()
        assert [name for name, _ in jpegs["skipped"]] == [name for name, _ in decoded["skipped"]]
    fresh = JpegBatches(ShardSource(broken), data, seed=0)
    skipped = [reason for step in range(3) for _, reason in fresh.batch(step)["skipped"]]
    assert skipped and all("damaged frame" in reason and "truncated" in reason for reason in skipped)


def test_decode_device_setting(shards, tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode_device("auto", cpu, shards) == "cpu"
    assert resolve_decode_device("auto", cuda, shards) == "cuda"
    assert resolve_decode_device("auto", cuda, tmp_path) == "cpu"  # raw videos decode in the workers
    with pytest.raises(VitoError, match="train.device cuda"):
        resolve_decode_device("cuda", cpu, shards)
    with pytest.raises(VitoError, match="prepared shards"):
        resolve_decode_device("cuda", cuda, tmp_path)
