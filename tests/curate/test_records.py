"""The durable per-rank record logs of a curation run: a crash's partial line is ignored and cut, damage is an
error naming the file and line."""

from __future__ import annotations

import pytest

from vito.curate.records import RecordLog, read_parts, read_records
from vito.errors import DataError


def test_partial_last_line_is_ignored_and_cut_before_appending(tmp_path):
    path = tmp_path / "rank-00000.jsonl"
    path.write_text('{"index": 0}\n{"index": 1}\n{"ind')
    assert read_records(path) == [{"index": 0}, {"index": 1}]
    with RecordLog(path) as log:
        log.append({"index": 2})
    assert read_records(path) == [{"index": 0}, {"index": 1}, {"index": 2}]
    (tmp_path / "parts").mkdir()
    path.rename(tmp_path / "parts" / path.name)
    assert sorted(read_parts(tmp_path)) == [0, 1, 2]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"index": 0}\n\xff\n', "not UTF-8 at byte 13"),
    (b'{"index": 0}\n[1]\n', r"rank\.jsonl:2: corrupt record \(not a JSON object"),
    (b'{"index": "0"}\n', r"rank\.jsonl:1: corrupt record \(not a JSON object with an integer 'index'\)"),
    (b'{"index": 0}\n{"index": 1,\n', r"rank\.jsonl:2: corrupt record \(Expecting"),
])
def test_a_damaged_log_is_a_data_error_naming_the_line(tmp_path, content, message):
    (tmp_path / "rank.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_records(tmp_path / "rank.jsonl")
