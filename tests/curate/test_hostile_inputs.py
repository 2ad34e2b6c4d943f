"""Hostile inputs to `vito curate`: settings that would reject every video for a wrong reason, and an output
folder whose run record is damaged, are one-line errors naming the option or the file."""

from __future__ import annotations

import json

import pytest

from tests.curate.conftest import write_colour_video
from vito.cli import main
from vito.curate.pipeline import CurationSettings, curate
from vito.errors import DataError, VitoError


@pytest.mark.parametrize(("field", "value"), [
    ("max_frames", 0), ("max_frames", -1), ("min_duration", float("nan")), ("min_duration", -1.0),
    ("class_cap", 0), ("batch_size", 0), ("image_size", 0),
])
def test_settings_that_would_reject_every_video_are_refused(field, value):
    with pytest.raises(VitoError, match=f"--{field.replace('_', '-')} must be"):
        CurationSettings(**{field: value})


def test_the_cli_names_the_option(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("path,title\na.mp4,a cup\n")
    args = ["curate", "--candidates", str(tmp_path / "c.csv"), "--classifier", "timm:resnet18",
            "--out", str(tmp_path / "out"), "--max-frames", "0"]
    assert main(args) == 2
    assert capsys.readouterr().err == "vito curate: error: --max-frames must be at least 1, got 0\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe{}", b"[1, 2]", b""])
def test_a_damaged_run_record_is_a_clear_error(tmp_path, colour_net, content):
    write_colour_video(tmp_path / "cup.mp4", ["red"] * 12, fps=1)
    (tmp_path / "c.jsonl").write_text(json.dumps({"path": "cup.mp4", "title": "a cup"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_bytes(content)
    with pytest.raises(VitoError, match=r"curation run record .*run\.json is not a readable JSON file|run\.json: not a curation run record"):
        curate(tmp_path / "c.jsonl", out, colour_net, CurationSettings(min_duration=1), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


@pytest.mark.parametrize("out", ["a_file", "a_file/out"])
def test_an_out_that_is_a_file_is_refused_before_the_classifier_loads(tmp_path, capsys, out):
    (tmp_path / "c.csv").write_text("path,title\na.mp4,a cup\n")
    (tmp_path / "a_file").write_text("mine\n")
    args = ["curate", "--candidates", str(tmp_path / "c.csv"), "--classifier", "timm:no-such-model",
            "--out", str(tmp_path / out)]
    assert main(args) == 2
    assert capsys.readouterr().err.endswith(f"{tmp_path / 'a_file'} is a file, not a folder\n")
    assert (tmp_path / "a_file").read_text() == "mine\n"


@pytest.mark.parametrize("damage", [b"\xff\xfe\n", b"[1, 2]\n", b'{"decision": "kept"}\n', b'{"index": "0"}\n'])
def test_a_damaged_record_log_is_a_clear_error_naming_it(tmp_path, colour_net, damage):
    write_colour_video(tmp_path / "cup.mp4", ["red"] * 12, fps=1)
    (tmp_path / "c.csv").write_text("path,title\ncup.mp4,a cup\ncup.mp4,another cup\n")
    out, settings = tmp_path / "out", CurationSettings(min_duration=1)
    curate(tmp_path / "c.csv", out, colour_net, settings, rank=0, world_size=2, progress=False)
    part = out / "parts" / "rank-00001.jsonl"
    part.write_bytes(damage)
    with pytest.raises(DataError, match=r"rank-00001\.jsonl(:1)?: corrupt record"):
        curate(tmp_path / "c.csv", out, colour_net, settings, rank=1, world_size=2, progress=False)
    assert not (out / "accepted.jsonl").exists()
