"""vito.io: atomic writes leave no partial file and give the permissions any new file gets."""

from __future__ import annotations

import os
import stat

import pytest

from vito.io import atomic_write, write_json


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
