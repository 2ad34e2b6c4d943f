"""Hostile inputs a demanding user feeds `vito prepare` and `vito pretrain`: each is a clear one-line error or a
counted skip naming the file and line, never a traceback or a silently wrong dataset."""

from __future__ import annotations

import json
import os

import pytest

from tests.data.test_sources import CFG
from vito.cli import main
from vito.data.pretrain_batches import build_pretrain_loader
from vito.data.sources import list_videos


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


@pytest.mark.parametrize(("text", "message"), [
    ("data:\n  batch_size: 4\n  batch_size: 8\n",
     r"line 3, column 3: duplicate key 'batch_size' \(first given at line 2\)"),
    ("data: {image_size: 64}\ndata: {batch_size: 8}\n", "duplicate key 'data'"),
    ("data:\n  1: 2\n  foo: 3\n", "unknown config key 'data.1'"),  # keys that YAML reads as a number or null
    ("~: 1\ndata: {}\n", "unknown config key 'None'"),
])
def test_config_keys_given_twice_or_not_as_names_are_refused(tmp_path, text, message):
    from vito.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_yaml_merge_keys_still_work(tmp_path):
    from vito.config import load_config

    (tmp_path / "c.yaml").write_text("data: &d {batch_size: 8, image_size: 64}\ntrain:\n  max_steps: 3\n"
                                     "optim: {warmup_steps: 2}\nmodel: {attention: false}\n")
    assert load_config(tmp_path / "c.yaml").data.batch_size == 8
    import yaml

    from vito.schema import StrictLoader

    assert yaml.load("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n", Loader=StrictLoader)["d"] == {"b": 3, "c": 2}
