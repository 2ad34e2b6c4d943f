"""The one manifest reader: the same table reads the same way for `vito prepare`, `vito curate` and the training
loader; only an empty required value differs (fatal, or a counted skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vito.data.manifest import SkippedRow, read_manifest
from vito.data.sources import list_videos
from vito.errors import DataError


def _in_words(path: Path, line: int) -> str:
    return f"{path} line {line}"


@pytest.mark.parametrize(("name", "text"), [
    ("m.csv", "path,title\na.mp4,x\nb.mp4,y\n"),
    ("m.jsonl", '{"path": "a.mp4"}\n{"path": "b.mp4"}\n'),
])
def test_a_manifest_with_a_byte_order_mark_is_read(two_videos, name, text):
    (two_videos / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # as Excel saves it
    entries, skipped = list_videos(two_videos / name)
    assert [e.path.name for e in entries] == ["a.mp4", "b.mp4"] and skipped == []


def test_a_csv_row_the_csv_module_cannot_parse_is_a_data_error_naming_the_line(two_videos):
    (two_videos / "m.csv").write_text("path\na.mp4\n\"b.mp4\n" + "x" * 200_000 + "\n")  # a stray quote
    with pytest.raises(DataError, match=r"m\.csv line 3: malformed CSV"):
        list_videos(two_videos / "m.csv")


def test_a_manifest_with_a_byte_order_mark_reads_and_a_malformed_csv_names_its_line(tmp_path, make_video):
    make_video("a.mp4", num_frames=10, fps=10)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfpath\na.mp4\n")  # as spreadsheet programs save it
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"path": "a.mp4"}\n')
    assert [row["path"] for _, row in read_manifest(tmp_path / "bom.csv").rows] == [str(tmp_path / "a.mp4")]
    assert [row["path"] for _, row in read_manifest(tmp_path / "bom.jsonl").rows] == [str(tmp_path / "a.mp4")]
    (tmp_path / "quote.csv").write_text('path\na.mp4\n"b.mp4\n' + "x" * 200_000 + "\n")  # a stray quote
    with pytest.raises(DataError, match=r"quote\.csv:3: malformed CSV"):
        read_manifest(tmp_path / "quote.csv")


@pytest.mark.parametrize(("name", "text"), [
    ("m.csv", "path,title\na.mp4,x\n,y\nb.mp4,z\n"),
    ("m.jsonl", '{"path": "a.mp4"}\n{"path": null}\n{"path": "b.mp4"}\n'),
])
def test_an_empty_required_value_is_fatal_or_a_counted_skip_as_the_caller_chooses(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    header = int(name.endswith(".csv"))  # a CSV's rows start on line 2
    with pytest.raises(DataError, match=rf"m\.{name[2:]}:{2 + header}: empty path"):
        read_manifest(tmp_path / name)
    table = read_manifest(tmp_path / name, empty="skip", locate=_in_words)
    assert [line for line, _ in table.rows] == [1 + header, 3 + header]
    line, where = 2 + header, tmp_path / name
    assert table.skipped == [SkippedRow(line, f"{where}:{line}", f"{where} line {line}: empty path")]


def test_paths_are_resolved_against_the_manifest_folder_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.csv").write_text("path\na.mp4\n../b.mp4\n/abs/c.mp4\n~/d.mp4\n~nosuchuser42/e.mp4\n")
    paths = [row["path"] for _, row in read_manifest(tmp_path / "lists" / "m.csv").rows]
    assert paths == [str(tmp_path / "lists" / "a.mp4"), str(tmp_path / "lists" / ".." / "b.mp4"), "/abs/c.mp4",
                     str(tmp_path / "home" / "d.mp4"), str(tmp_path / "lists" / "~nosuchuser42" / "e.mp4")]


def test_a_home_of_no_known_user_is_a_counted_skip_not_a_crash(two_videos):
    (two_videos / "m.csv").write_text("path\na.mp4\n~nosuchuser42/b.mp4\n")
    entries, skipped = list_videos(two_videos / "m.csv")
    assert [e.line for e in entries] == [2] and "line 3" in skipped[0][1] and "file not found" in skipped[0][1]


@pytest.mark.parametrize("suffix", [".ndjson", ".json"])
def test_json_lines_manifests_read_under_each_of_their_suffixes(tmp_path, suffix):
    (tmp_path / f"m{suffix}").write_text('{"path": "a.mp4", "class": "cup"}\n\n{"path": "b.mp4"}\n')
    assert [line for line, _ in read_manifest(tmp_path / f"m{suffix}").rows] == [1, 3]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("m.txt", "path\na.mp4\n", r"m\.txt: expected a \.csv or \.jsonl file"),
    ("gone.csv", None, r"gone\.csv: file not found"),
    ("m.csv", "", r"m\.csv: missing column path, title \(a CSV manifest needs a 'path' and a 'title' column; found "
                  r"an empty file\)"),
    ("m.csv", "file,title\na.mp4,x\n", r"m\.csv: missing column path \(.*found header \['file', 'title'\]\)"),
    ("m.csv", "path,title\n", r"m\.csv: no rows"),
    ("m.jsonl", "\n\n", r"m\.jsonl: no rows"),
    ("m.jsonl", '{"path": 3, "title": "x"}\n', r"m\.jsonl:1: 'path' must be a string, got int"),
    ("m.jsonl", '["a.mp4", "x"]\n', r"m\.jsonl:1: expected a JSON object, got list"),
    ("m.jsonl", b'{"path": "vid\xe9o.mp4"}\n', r"m\.jsonl: not UTF-8 text"),
])
@pytest.mark.parametrize("empty", ["raise", "skip"])
def test_a_broken_manifest_is_one_data_error_in_either_mode(tmp_path, name, content, message, empty):
    if isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    elif content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / name, ("path", "title"), empty=empty)
