"""UCF-101's official files read strictly: a malformed class index or split list is a one-line DataError."""

from __future__ import annotations

from pathlib import Path

import pytest

from vito.errors import DataError
from vito.eval.video import ucf101_data


@pytest.mark.parametrize(("class_index", "message"), [
    (b"\xff1 A\n", "class index .* is not a readable UTF-8 text file"),
    (b"1 A B\n", "line 1: '1 A B' is not"),
    (b"x A\n", "line 1: 'x A' is not"),
    (b"1 A\n1 B\n", "line 2: '1 B' is not .* a new id"),
    (b"1 A\n3 B\n", "must be 1..N without gaps"),
])
def test_ucf101_malformed_class_index_is_a_data_error(tmp_path: Path, class_index: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_bytes(class_index)
    with pytest.raises(DataError, match=message):
        ucf101_data.read_class_names(tmp_path)


@pytest.mark.parametrize(("split_list", "message"), [
    (b"A/v_A_g01_c01.avi one\n", "line 1: 'A/v_A_g01_c01.avi one' is not"),
    (b"A/v_\xff.avi 1\n", "split file .* is not a readable UTF-8 text file"),
    (b"A/v_A_g01_c01.avi 1\nA/v_A_g01_c01.avi 1\n", "line 2: A/v_A_g01_c01.avi is listed more than once"),
    (b"\r\n\n", "trainlist01.txt lists no videos"),
])
def test_ucf101_malformed_split_list_is_a_data_error(tmp_path: Path, split_list: bytes, message: str) -> None:
    (tmp_path / "classInd.txt").write_text("1 A\n2 B\n")
    (tmp_path / "trainlist01.txt").write_bytes(split_list)
    with pytest.raises(DataError, match=message):
        ucf101_data.read_split(tmp_path, 1, "train")
