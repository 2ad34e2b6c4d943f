"""Run folders: a run is never overwritten by accident, nor shared by two live runs; input errors are found
before the folder is touched. The refusals are checked on real `vito pretrain` subprocesses."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, tiny_config
from vito.engine.run_folder import LOCK, RunFolder, holds_run
from vito.errors import VitoError
from vito.pretrain.loop import pretrain


@pytest.fixture(scope="module")
def finished_run(videos: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    pretrain(tiny_config("train.max_steps=1"), videos, run)
    return run


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vito", "pretrain", "--config", "demo", *args, *TINY_OVERRIDES],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_untouched(finished_run: Path, videos: Path) -> None:
    before = _snapshot(finished_run)
    done = _cli("--data", str(videos), "--out", str(finished_run), "--max-steps", "1")
    assert done.returncode == 2, done.stderr
    assert "already holds a run" in done.stderr and "--resume" in done.stderr and "--overwrite" in done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot(finished_run) == before


def test_the_refusal_comes_first_not_after_the_start_up(finished_run: Path, tmp_path: Path) -> None:
    """Before the model is built and the data is scanned (minutes on a large dataset)."""
    with pytest.raises(VitoError, match="already holds a run"):
        pretrain(tiny_config("train.max_steps=1"), tmp_path / "no_such_data", finished_run)


@pytest.mark.slow
def test_data_errors_are_found_before_the_run_folder_is_touched(finished_run: Path, tmp_path: Path) -> None:
    no_videos = tmp_path / "no_videos"
    no_videos.mkdir()
    (no_videos / "notes.txt").write_text("not a video")
    fresh = tmp_path / "fresh"
    done = _cli("--data", str(no_videos), "--out", str(fresh), "--max-steps", "1")
    assert done.returncode == 2 and "no video files" in done.stderr, done.stderr
    assert not fresh.exists()
    # even --overwrite leaves the old run alone when the new one cannot start
    before = _snapshot(finished_run)
    done = _cli("--data", str(no_videos), "--out", str(finished_run), "--max-steps", "1", "--overwrite")
    assert done.returncode == 2 and "no video files" in done.stderr, done.stderr
    assert _snapshot(finished_run) == before


def test_holds_run(tmp_path: Path) -> None:
    assert not holds_run(tmp_path / "missing") and not holds_run(tmp_path)
    (tmp_path / "videos").mkdir()
    assert not holds_run(tmp_path)
    for marker in ("config.yaml", "metrics.jsonl", "checkpoints"):
        folder = tmp_path / marker.replace(".", "_")
        folder.mkdir()
        (folder / marker).mkdir() if marker == "checkpoints" else (folder / marker).write_text("")
        assert holds_run(folder), marker


def test_the_lock_names_host_and_pid_and_keeps_a_second_run_out(tmp_path: Path) -> None:
    with RunFolder(tmp_path / "run", resume=False) as folder:
        holder = json.loads((tmp_path / "run" / LOCK).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        (tmp_path / "run" / "config.yaml").write_text("{}\n")
        with pytest.raises(VitoError, match=f"in use by the run of process {os.getpid()}"):
            RunFolder(tmp_path / "run", resume=True).__enter__()
        assert folder.notes == []
    assert not (tmp_path / "run" / LOCK).exists()  # released
    with RunFolder(tmp_path / "run", resume=True):
        pass


def test_a_stale_lock_is_reported_and_taken(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.joinpath(LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
    with RunFolder(tmp_path, resume=False) as folder:
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert folder.notes == [f"took over the stale lock of process {dead.pid} on host {socket.gethostname()} "
                            "(since then), which is no longer running"]


def test_a_lock_from_another_host_needs_break_lock(tmp_path: Path) -> None:
    tmp_path.joinpath(LOCK).write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    with pytest.raises(VitoError, match="process 4242 on host node-17.*--break-lock"):
        RunFolder(tmp_path, resume=False).__enter__()
    with RunFolder(tmp_path, resume=False, break_lock=True) as folder:
        assert json.loads((tmp_path / LOCK).read_text())["host"] == socket.gethostname()
    assert "broke the lock of process 4242 on host node-17" in folder.notes[0]


def test_overwrite_empties_only_the_run_files(tmp_path: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "train.log", "checkpoints/last.pt", "tb/events", "videos/a.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("old")
    with pytest.raises(VitoError, match="exclude each other"):
        RunFolder(tmp_path, resume=True, overwrite=True)
    with RunFolder(tmp_path, resume=False, overwrite=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "videos"]
    assert (tmp_path / "videos" / "a.mp4").read_text() == "old"


def test_temporary_files_of_a_killed_save_are_removed_at_the_next_start(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"intact")
    leftovers = [tmp_path / "checkpoints" / ".last.pt.k2j3.tmp", tmp_path / ".metrics.jsonl.x1.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    with RunFolder(tmp_path, resume=True) as folder:
        pass
    assert not any(p.exists() for p in leftovers) and (tmp_path / "checkpoints" / "last.pt").exists()
    assert len(folder.notes) == 2 and all("interrupted write" in note for note in folder.notes)


def test_demo_starts_its_run_folder_afresh(tmp_path: Path, monkeypatch) -> None:
    """`vito demo` owns runs/demo: its pretraining call overwrites the previous demo run."""
    import vito.demo
    import vito.pretrain.loop

    calls = []

    class Stop(Exception):
        pass

    def fake_pretrain(*args, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(vito.demo, "render_videos", lambda folder: ([], []))
    monkeypatch.setattr(vito.pretrain.loop, "pretrain", fake_pretrain)
    with pytest.raises(Stop):
        vito.demo.run_demo(tmp_path, max_steps=1)
    assert calls[0]["overwrite"] is True and calls[0]["run_dir"] == tmp_path


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    with pytest.raises(VitoError, match="cannot create the folder .*a_file/run: Not a directory"):
        RunFolder(in_the_way / "run", resume=False).__enter__()

    import vito.engine.run_folder as run_dir

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_dir.os, "open", read_only)  # root ignores permissions: a read-only mount instead
    with pytest.raises(VitoError, match=f"cannot write in {tmp_path / 'run'} \\(creating its lock file: "
                                        "Read-only file system"):
        RunFolder(tmp_path / "run", resume=False).__enter__()


def test_a_full_disk_is_a_clear_error_and_leaves_no_empty_lock(tmp_path: Path, monkeypatch) -> None:
    import vito.engine.run_folder as run_dir

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:  # creating the lock file works, writing into it does not
        patch.setattr(run_dir.json, "dump", disk_full)
        with pytest.raises(VitoError, match=f"cannot write in {tmp_path / 'run'} \\(writing its lock file: "
                                            "No space left on device"):
            RunFolder(tmp_path / "run", resume=False).__enter__()
    assert not (tmp_path / "run" / LOCK).exists()  # an empty lock would need --break-lock once there is room
    with RunFolder(tmp_path / "run", resume=False):
        assert (tmp_path / "run" / LOCK).is_file()
