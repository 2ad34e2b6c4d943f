"""Local files: paths are files, never protocols (issue 10 item 4), only regular files are read, folders are
walked once.

Every name is opened as the local file of that name.

FFmpeg reads a name such as ``pipe:0`` as a URL (stdin), ``concat:b.mp4`` as the concatenation of other
files, ``subfile,,...:b.mp4`` as a byte range of another file. Each caller's entry point into
``vito.data.video`` is tried with such names relative to the working directory, where FFmpeg would take
them as protocols: it must read the file of that very name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import decode_index
from vito.data.local_files import file_identity, open_local_file, walk_once
from vito.data.shards.format import ShardSettings
from vito.data.shards.writer import encode_clip
from vito.data.sources import VideoEntry, VideoFolderSource, find_videos, list_videos
from vito.data.video import VideoReader, iter_frames, probe_video, read_frames
from vito.errors import DataError

PROTOCOL_NAMES = ["pipe:0", "concat:other.mp4", "subfile,,start,0,end,999999,,:other.mp4", "file:other.mp4"]


@pytest.fixture
def protocol_files(tmp_path, make_video, monkeypatch):
    """``other.mp4`` (60 frames, first index 0) and copies of a 20-frame video under protocol-like names, in
    the working directory. Both start at frame 0, so they are told apart by their frame count."""
    make_video("other.mp4", num_frames=60, fps=10, b_frames=0, size=(64, 48))
    short = make_video("short.mp4", num_frames=20, fps=10, b_frames=0, size=(64, 48))
    for name in PROTOCOL_NAMES:
        shutil.copy(short, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_every_entry_point_reads_the_local_file_of_that_name(protocol_files, name):
    info = probe_video(name)  # curate (length filter), attention, eval ucf101
    assert info.duration == pytest.approx(2.0, abs=0.11)
    frames = read_frames(name, [1.95], short_side=32)  # attention, eval ucf101
    assert decode_index(frames[0].numpy()) == 19
    assert len(list(iter_frames(name, max_frames=100, short_side=32))) == 20  # curate (classifier), demo
    video, jpegs = encode_clip(name, ShardSettings(fps=10, short_side=32))  # prepare
    assert len(jpegs) == 20 and video["duration"] == pytest.approx(2.0, abs=0.11)
    source = VideoFolderSource([VideoEntry(Path(name))])  # pretrain
    clip = source.read_clip(0, lambda duration: np.array([duration]), 32)
    assert decode_index(clip[0].numpy()) == 19


def test_non_regular_files_are_data_errors(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    for path, reason in [("/dev/zero", "not a regular file \\(a character device\\)"),
                         (tmp_path / "folder.mp4", "not a regular file \\(a directory\\)"),
                         (tmp_path / "gone.mp4", "file not found")]:
        with pytest.raises(DataError, match=reason):
            VideoReader(path)


def test_manifest_rows_name_files_next_to_the_manifest(protocol_files, caplog):
    """Rows that look like protocols are files next to the manifest: opened when present, else counted."""
    rows = PROTOCOL_NAMES + ["http://example.com/v.mp4", "pipe:1"]
    (protocol_files / "list.jsonl").write_text("".join(json.dumps({"path": row}) + "\n" for row in rows))
    with caplog.at_level(logging.WARNING):
        entries = find_videos("list.jsonl")  # relative manifest: rows resolve to bare protocol-like names
    assert [e.line for e in entries] == [1, 2, 3, 4]
    assert "2 of 6 rows skipped" in caplog.text and "list.jsonl line 5" in caplog.text
    source = VideoFolderSource(entries)
    for i in range(len(source)):
        clip = source.read_clip(i, lambda duration: np.array([duration]), 32)
        assert decode_index(clip[0].numpy()) == 19  # the 20-frame copy, never other.mp4 (60 frames)


def test_a_name_with_a_nul_byte_is_a_data_error_and_a_manifest_skip(two_videos):
    with pytest.raises(DataError, match="NUL byte"):
        VideoReader(str(two_videos / "a.mp4") + "\0")
    (two_videos / "m.csv").write_bytes(b"path\na.mp4\x00\nb.mp4\n")
    entries, skipped = list_videos(two_videos / "m.csv")
    assert [e.line for e in entries] == [3]
    assert len(skipped) == 1 and "line 2" in skipped[0][1] and "NUL byte" in skipped[0][1]


def test_a_pipe_is_refused_before_it_is_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it for reading would wait for a writer forever
    with pytest.raises(DataError, match=r"pipe\.mp4: not a regular file \(a pipe\)"):
        open_local_file(tmp_path / "pipe.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4: empty file \(0 bytes\)"):
        open_local_file(tmp_path / "empty.mp4")


def test_folders_are_walked_in_order_each_real_folder_once(tmp_path):
    for name in ("b/2.txt", "b/1.txt", "a/x.txt", "top.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)  # a loop
    (tmp_path / "c").symlink_to(tmp_path / "b", target_is_directory=True)  # a second name of b/
    (tmp_path / "b" / "dangling.txt").symlink_to(tmp_path / "nowhere")
    walked = [p.relative_to(tmp_path).as_posix() for p in walk_once(tmp_path)]
    assert walked == ["top.txt", "a/x.txt", "b/1.txt", "b/2.txt", "b/dangling.txt"]
    assert file_identity(tmp_path / "c" / "1.txt") == file_identity(tmp_path / "b" / "1.txt")
    assert file_identity(tmp_path / "b" / "2.txt") != file_identity(tmp_path / "b" / "1.txt")
