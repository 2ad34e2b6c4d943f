"""vito.io: atomic writes leave no partial file and give the permissions any new file gets."""

from __future__ import annotations

import os
import stat

import pytest

from vito.errors import DataError
from vito.io import atomic_write, inside_name, write_json


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_keep_the_umask_permissions(tmp_path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "result.json", {"a": 1})
        with atomic_write(tmp_path / "weights.bin", mode="wb") as handle:
            handle.write(b"\0")
        with open(tmp_path / "plain.txt", "w") as handle:  # what open() gives, the reference
            handle.write("x")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["result.json", "weights.bin", "plain.txt"], 0o666 & ~umask)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "index.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["index.json"]


@pytest.mark.parametrize(("name", "subfolders"), [("", False), (".", False), ("..", False), ("a/b", False),
                                                  ("/a", True), ("a/../b", True), ("a//b", True), ("a\\b", True),
                                                  ("a\0b", True), ("C:\\x", False)])
def test_names_from_dataset_files_that_could_leave_the_folder_are_refused(name: str, subfolders: bool) -> None:
    with pytest.raises(DataError, match="may not leave its folder"):
        inside_name(name, "list.txt line 3", subfolders=subfolders)


def test_plain_names_and_inner_paths_pass_unchanged() -> None:
    assert inside_name("2007_000033", "val.txt") == "2007_000033"
    assert inside_name("..a", "val.txt") == "..a"  # dots inside a name are no parent folder
    assert inside_name("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "testlist01.txt", subfolders=True)
