"""Bad files never hide good ones and never change the batches (issue 10 item 3).

Usability is decided by a static pre-scan of every file; a clip that still fails at some times is replaced
for its slot by a rule of (seed, step, rank, slot) and the pre-scan alone. So the batches are the same for
any number of DataLoader workers and after a resume, and "no usable video" means none is.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vito.config import DataConfig
from vito.data import prescan, sources
from vito.data.prescan import SCAN_NAME, cached_scan, save_scan, scan_source
from vito.data.pretrain_batches import PretrainBatches, build_pretrain_loader
from vito.engine import distributed
from vito.errors import DataError

CFG = DataConfig(batch_size=4, num_views=2, window_seconds=2.0, image_size=16, decode_short_side=16, num_workers=0)
STEPS = 150
SEED = 11
# Pinned: for 3, 4 and 5 broken files of 6, which always fail, and the one that fails only late (t > 6 s).
BROKEN = {3: {1, 4}, 4: {0, 2, 5}, 5: {0, 1, 4, 5}}
PARTLY = {3: 3, 4: 1, 5: 2}


class FakeSource:
    """6 ten-second "videos" whose frames encode (video, time); ``broken`` fail always, ``partly`` after 6 s."""

    def __init__(self, broken: set[int], partly: int):
        self.broken, self.partly, self.reads = broken, partly, 0

    def __len__(self) -> int:
        return 6

    def name(self, i: int) -> str:
        return f"fake{i}.mp4"

    def read_clip(self, i, times_fn, short_side):
        self.reads += 1
        if i in self.broken:
            raise DataError(f"fake{i}.mp4: not a readable video (broken)")
        times = np.asarray(times_fn(10.0))
        if i == self.partly and times.max() > 6.0:
            raise DataError(f"fake{i}.mp4: decoding failed (corrupt after 6 s)")
        values = (i * 40 + np.round(times * 3)).astype(np.uint8)
        return torch.from_numpy(np.broadcast_to(values[:, None, None, None], (len(times), 20, 24, 3)).copy())


def _stream(source, workers: int, start: int, count: int) -> list[dict]:
    dataset = PretrainBatches(source, CFG, SEED, start_step=start, unusable=scan_source(source))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [batch for batch, _ in zip(loader, range(count))]


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_batches_identical_for_any_worker_count_and_after_resume(broken):
    source = FakeSource(BROKEN[broken], PARTLY[broken])
    assert set(scan_source(source)) == BROKEN[broken]  # the partly broken file passes the pre-scan
    one = _stream(source, 0, 0, STEPS)
    two = _stream(source, 2, 0, STEPS)
    resumed = _stream(source, 0, 97, STEPS - 97)
    assert [b["step"] for b in two] == list(range(STEPS))
    for a, b in zip(one, two):
        assert torch.equal(a["views"], b["views"]) and torch.equal(a["video_index"], b["video_index"]), a["step"]
    for a, b in zip(one[97:], resumed):
        assert torch.equal(a["views"], b["views"]) and torch.equal(a["video_index"], b["video_index"]), a["step"]
    used = torch.cat([b["video_index"] for b in one])
    assert set(used.tolist()) == set(range(6)) - BROKEN[broken]  # every usable video is used, broken ones never
    assert [tuple(s) for s in one[0]["skipped"][: len(BROKEN[broken])]] == [
        (f"fake{i}.mp4", f"fake{i}.mp4: not a readable video (broken)") for i in sorted(BROKEN[broken])
    ]  # the pre-scan's findings are reported once, with the first batch
    late = [name for b in one[1:] for name, _ in b["skipped"]]
    assert late and set(late) == {f"fake{PARTLY[broken]}.mp4"}  # failed in some slots, replaced there only


def test_replacement_depends_only_on_seed_step_rank_slot():
    """Reading a slot after other slots (a worker that met the bad files before) picks the same clip."""
    source = FakeSource({0, 2, 3, 5}, 1)
    dataset = PretrainBatches(source, CFG, SEED, unusable=scan_source(source))
    fresh = PretrainBatches(source, CFG, SEED, unusable=scan_source(source))
    for step in (40, 3, 17, 3):
        assert torch.equal(dataset.batch(step)["views"], fresh.batch(step)["views"])
        fresh = PretrainBatches(source, CFG, SEED, unusable=scan_source(source))
    other_rank = PretrainBatches(source, CFG, SEED, rank=1, world_size=2, unusable=scan_source(source))
    assert list(other_rank.candidates(5, 0)) != list(dataset.candidates(5, 0))


def test_no_usable_video_only_when_none_is():
    with pytest.raises(DataError, match="no usable video among 6 files"):
        scan_source(FakeSource(set(range(6)), -1))
    good_last = FakeSource(set(range(5)), -1)  # only the last file works
    batch = PretrainBatches(good_last, CFG, SEED, unusable=scan_source(good_last)).batch(0)
    assert batch["video_index"].tolist() == [5, 5, 5, 5]


def test_startup_check_reads_past_64_broken_files(tmp_path, make_video):
    """Real files: 70 broken ones (empty, text, noise) sorted before 2 good videos and a truncated one."""
    for k in range(70):
        (tmp_path / f"a{k:02d}.mp4").write_bytes([b"", b"text\n" * 20, np.random.default_rng(k).bytes(900)][k % 3])
    make_video("y.mp4", num_frames=30, fps=10, b_frames=0, size=(32, 24))
    make_video("z.mp4", num_frames=30, fps=10, b_frames=0, size=(32, 24))
    data = make_video("truncated.mp4", num_frames=100, fps=10, b_frames=0, size=(32, 24)).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    run = tmp_path / "run"
    cfg = DataConfig(batch_size=4, num_views=2, window_seconds=1.0, image_size=16, decode_short_side=16,
                     num_workers=2)
    loader = build_pretrain_loader(tmp_path, cfg, seed=0)
    loader.dataset.save_scan(run)
    first = [b for b, _ in zip(loader, range(3))]
    names = {tmp_path / "y.mp4", tmp_path / "z.mp4"}
    scan = json.loads((run / SCAN_NAME).read_text())
    assert len(scan["files"]) == 73 and len(scan["unusable"]) == 71
    assert len(first[0]["skipped"]) == 71 and all(b["skipped"] == [] for b in first[1:])
    assert "truncated" in dict(first[0]["skipped"])[str(tmp_path / "truncated.mp4")]
    source = sources.open_source(tmp_path)
    assert {source.name(i) for b in first for i in b["video_index"].tolist()} == {str(n) for n in names}
    resumed = build_pretrain_loader(tmp_path, cfg.__class__(**{**cfg.__dict__, "num_workers": 0}), seed=0,
                                    start_step=1, scan_cache=run)
    assert torch.equal(next(iter(resumed))["views"], first[1]["views"])


def test_the_cache_is_what_a_resume_uses(tmp_path, monkeypatch):
    source = FakeSource({1, 3, 4}, 5)
    first = cached_scan(source, tmp_path)  # nothing saved yet: a scan
    save_scan(tmp_path, source, first)
    source.broken = {1}  # files changed on disk since: the run keeps its first answer
    monkeypatch.setattr(prescan, "probe_clip", lambda *a: pytest.fail("scanned again"))
    assert cached_scan(source, tmp_path) == first == {i: f"fake{i}.mp4: not a readable video (broken)"
                                                      for i in (1, 3, 4)}
    (tmp_path / SCAN_NAME).write_text("{broken json")
    monkeypatch.undo()
    assert set(cached_scan(source, tmp_path)) == {1}  # an unreadable cache is scanned again


def test_training_log_counts_every_skip_and_the_run_keeps_the_scan(tmp_path, make_video):
    """Through ``pretrain``: manifest rows and unusable files are in train.log and in the skipped total."""
    from vito.config import load_config
    from vito.pretrain.loop import pretrain

    for name in ("a.mp4", "b.mp4"):
        make_video(name, num_frames=20, fps=10, b_frames=0, size=(48, 32))
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    (tmp_path / "list.csv").write_text("path\na.mp4\n\nmissing.mp4\nempty.mp4\nb.mp4\n/dev/zero\nnotes.mp4\n")
    config = load_config("demo", [
        "model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16", "data.image_size=32",
        "data.decode_short_side=32", "data.batch_size=4", "data.num_workers=0", "train.precision=fp32",
        "train.max_steps=1", "train.log_every=1"])
    result = pretrain(config, tmp_path / "list.csv", tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert result.skipped_videos == 4
    assert "list.csv line 4: " in log and "missing.mp4: file not found" in log
    assert "list.csv line 7: /dev/zero: not a regular file" in log
    assert re.search(r"list\.csv line 5: \S*empty\.mp4: empty file", log)  # rows the pre-scan refused: with their line
    assert re.search(r"list\.csv line 8: \S*notes\.mp4", log)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["skipped"] == 4
    assert json.loads((tmp_path / "run" / SCAN_NAME).read_text())["unusable"].keys() == {"1", "3"}


class _TwoRanks:
    """Stands in for torch.distributed on rank 0 of 2: rank 1's answers are what it would find on its share."""

    def __init__(self, remote: dict):
        self.remote = remote

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return 2

    def all_gather_object(self, out: list, obj: list) -> None:
        asked = "cached" if obj and isinstance(obj[0], bool) else "scan"  # was the scan cached / what failed
        out[:] = [obj, self.remote[asked]]


def test_processes_split_the_scan_and_share_the_answer(monkeypatch):
    source = FakeSource({0, 3, 4}, 5)
    remote = {"scan": [(3, "fake3.mp4: not a readable video (broken)")], "cached": [False]}  # rank 1 probed 1, 3, 5
    monkeypatch.setattr(prescan, "dist", _TwoRanks(remote))
    monkeypatch.setattr(distributed, "dist", _TwoRanks(remote))  # the engine's gather_objects
    failed = cached_scan(source, None, rank=0, world_size=2)
    assert source.reads == 3  # rank 0 probed its share only: 0, 2, 4
    assert set(failed) == {0, 3, 4}
