"""The curation run: expected decisions, per-class cap, crash safety (SIGKILL + rerun), ranks, merge, CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.curate.conftest import BLUE_CLASS, GREEN_CLASS, RED_CLASS, write_colour_video
from vito.cli import main
from vito.curate.pipeline import CurationSettings, curate
from vito.curate.records import read_records
from vito.errors import DataError, VitoError

SETTINGS = CurationSettings(class_cap=4, batch_size=32, image_size=32)
OUTPUTS = ("accepted.jsonl", "rejected.jsonl", "summary.json")

# (file, colours, title, id, expected reason, expected class)
CASES = [
    ("red.mp4", ["red"] * 120, "Red cup on a table", "a", "kept", RED_CLASS),
    ("green.mp4", ["green"] * 120, "A cup of green tea", "b", "classifier_miss", None),
    ("broken.mp4", None, "broken cup", "c", "unreadable", None),
    ("short.mp4", ["red"] * 50, "Tiny cup", "d", "too_short", None),
    ("red2.mp4", ["red"] * 120, "Another cup", "e", "class_cap", None),  # cup already has 4 videos
    ("ball.mp4", ["green"] * 120, "Soccer balls: juggling tricks", "f", "kept", GREEN_CLASS),
    ("blue.mp4", ["blue"] * 120, "A cup and a sulphur-crested cockatoo", "g", "kept", BLUE_CLASS),
    ("red.mp4", None, "Red cup on a table (again)", "a", "duplicate", None),
    ("holiday.mp4", ["red"] * 120, "Our summer holiday", "h", "no_title_match", None),
]


@pytest.fixture
def candidates(tmp_path) -> Path:
    """Synthetic videos in tmp/videos and a candidate CSV in tmp with paths relative to it."""
    for name, colours, *_ in CASES:
        if colours is not None:
            write_colour_video(tmp_path / "videos" / name, colours)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00" * 1000)
    path = tmp_path / "candidates.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "title", "id"])
        for name, _, title, key, *_ in CASES:
            writer.writerow([f"videos/{name}", title, key])
    return path


def outputs(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in OUTPUTS}


def test_decisions_summary_and_outputs(candidates, tmp_path, colour_net, capsys):
    summary = curate(candidates, tmp_path / "out", colour_net, SETTINGS, classifier_name="mean-colour", progress=True)
    bar = capsys.readouterr().err.strip().splitlines()[-1]
    assert "9/9" in bar and "videos_per_s=" in bar and "frames_per_s=" in bar  # the progress bar's rates
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    accepted = [json.loads(line) for line in (tmp_path / "out" / "accepted.jsonl").read_text().splitlines()]
    by_index = {r["index"]: r for r in rejected + accepted}
    assert sorted(by_index) == list(range(len(CASES)))
    for index, (name, _, _, _, reason, cls) in enumerate(CASES):
        assert (by_index[index]["reason"], by_index[index]["class"]) == (reason, cls), name
    assert [r["index"] for r in accepted] == [0, 5, 6]  # candidate order
    assert by_index[0]["path"] == str(tmp_path / "videos" / "red.mp4")  # resolved against the CSV's folder
    assert by_index[6]["title_classes"] == [RED_CLASS, BLUE_CLASS] and by_index[6]["retrieved_classes"] == [BLUE_CLASS]
    assert by_index[0]["best_frame"] == 0 and by_index[0]["best_score"] > 0.99 and by_index[0]["frames"] == 100
    assert summary["reasons"] == {"kept": 3, "no_title_match": 1, "duplicate": 1, "class_cap": 1,
                                  "unreadable": 1, "too_short": 1, "classifier_miss": 1}
    assert summary["per_class"][str(RED_CLASS)] == {"name": "cup", "title_matches": 7, "kept": 1}
    assert summary["classes_kept"] == 3
    assert (tmp_path / "out" / "class_distribution.png").read_bytes()[:4] == b"\x89PNG"


def test_a_video_naming_two_verified_classes_is_kept_once_under_the_best(tmp_path, colour_net):
    write_colour_video(tmp_path / "mix.mp4", ["red"] * 40 + ["blue"] * 80)
    (tmp_path / "c.jsonl").write_text(json.dumps({"path": "mix.mp4", "title": "Red cup, Cacatua galerita"}) + "\n")
    summary = curate(tmp_path / "c.jsonl", tmp_path / "out", colour_net, SETTINGS, progress=False)
    accepted = [json.loads(line) for line in (tmp_path / "out" / "accepted.jsonl").read_text().splitlines()]
    assert summary["kept"] == 1 and accepted[0]["verified_classes"] == [RED_CLASS, BLUE_CLASS]
    assert accepted[0]["class"] == BLUE_CLASS  # equal best scores (~1.0): the lower class index
    assert summary["per_class"][str(RED_CLASS)]["kept"] == 0


def test_two_ranks_cover_every_candidate_once_and_merge_to_the_single_run(candidates, tmp_path, colour_net):
    curate(candidates, tmp_path / "single", colour_net, SETTINGS, classifier_name="m", progress=False)
    assert curate(candidates, tmp_path / "two", colour_net, SETTINGS, classifier_name="m", rank=0, world_size=2,
                  progress=False) is None  # rank 1 has not run yet
    assert not (tmp_path / "two" / "accepted.jsonl").exists()
    summary = curate(candidates, tmp_path / "two", colour_net, SETTINGS, classifier_name="m", rank=1, world_size=2,
                     progress=False)
    assert summary is not None
    for rank in range(2):
        indices = [r["index"] for r in read_records(tmp_path / "two" / "parts" / f"rank-{rank:05d}.jsonl")]
        assert indices == list(range(rank, len(CASES), 2))
    assert outputs(tmp_path / "two") == outputs(tmp_path / "single")


RUN = """
import sys, time
from conftest import MeanColourNet
from vito.curate.pipeline import CurationSettings, curate

class Slow(MeanColourNet):
    def forward(self, images):
        time.sleep(float(sys.argv[3]))
        return super().forward(images)

settings = CurationSettings(class_cap=4, batch_size=32, image_size=32)
curate(sys.argv[1], sys.argv[2], Slow(), settings, classifier_name="mean-colour", progress=False)
"""


def start_run(candidates: Path, out: Path, delay: float, **env: str) -> subprocess.Popen:
    """A curation run in its own process (rank and world size from ``env``, as torchrun sets them)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **env}
    return subprocess.Popen([sys.executable, "-c", RUN, str(candidates), str(out), str(delay)], env=env)


@pytest.mark.slow
def test_concurrent_ranks_from_torchrun_variables_cover_every_candidate_once(candidates, tmp_path, colour_net):
    ranks = [start_run(candidates, tmp_path / "two", 0.0, RANK=str(r), WORLD_SIZE="2") for r in range(2)]
    assert [process.wait(timeout=300) for process in ranks] == [0, 0]
    records = [read_records(tmp_path / "two" / "parts" / f"rank-{r:05d}.jsonl") for r in range(2)]
    assert [[r["index"] for r in part] for part in records] == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    curate(candidates, tmp_path / "single", colour_net, SETTINGS, classifier_name="mean-colour", progress=False)
    assert outputs(tmp_path / "two") == outputs(tmp_path / "single")  # whichever rank merged, or both


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_repeats(candidates, tmp_path, colour_net):
    out = tmp_path / "killed"
    process = start_run(candidates, out, 0.4)
    part = out / "parts" / "rank-00000.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if part.exists() and part.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(read_records(part))
    assert 2 <= done < len(CASES), "the run must be killed part-way"
    assert not (out / "accepted.jsonl").exists()
    with pytest.raises(VitoError, match="other settings"):  # a rerun with other settings must not mix results
        curate(candidates, out, colour_net, CurationSettings(), classifier_name="mean-colour", progress=False)
    curate(candidates, out, colour_net, SETTINGS, classifier_name="mean-colour", resume=True, progress=False)
    records = read_records(part)
    assert sorted(r["index"] for r in records) == list(range(len(CASES)))  # nothing lost, nothing repeated
    assert records[:done] == read_records(part)[:done]  # the first records were kept, not redone
    curate(candidates, tmp_path / "clean", colour_net, SETTINGS, classifier_name="mean-colour", progress=False)
    assert outputs(out) == outputs(tmp_path / "clean")


def test_resume_needs_a_run(tmp_path, colour_net):
    (tmp_path / "c.csv").write_text("path,title\nv.mp4,a cup\n")
    with pytest.raises(VitoError, match="nothing to resume"):
        curate(tmp_path / "c.csv", tmp_path / "out", colour_net, resume=True, progress=False)


BAD_CANDIDATES = [
    ("missing.csv", None, "file not found"),
    ("c.txt", "path,title\nv.mp4,a cup\n", "expected a .csv or .jsonl"),
    ("c.csv", "", "missing column path, title"),
    ("c.csv", "file,name\nv.mp4,a cup\n", "missing column path, title"),
    ("c.csv", "path,title\n", "no rows"),
    ("c.csv", "path,title\nv.mp4,a cup\nw.mp4,\n", r"c\.csv:3: empty title"),
    ("c.csv", "path,title,duration\nv.mp4,a cup,12 s\n", r"c\.csv:2: duration '12 s' is not a number"),
    ("c.csv", "path,title,duration\nv.mp4,a cup,-3\n", "is not a number of seconds"),
    ("c.csv", b"path,title\nv.mp4,caf\xe9\n", "not UTF-8"),
    ("c.jsonl", '{"path": "v.mp4", "title": "a cup"}\n{"path": "w.mp4", "title"\n', r"c\.jsonl:2: not valid JSON"),
    ("c.jsonl", '["v.mp4", "a cup"]\n', "expected a JSON object, got list"),
    ("c.jsonl", '{"path": "v.mp4"}\n', r"c\.jsonl:1: empty title"),
]


@pytest.mark.parametrize("name, content, message", BAD_CANDIDATES)
def test_bad_candidate_files_are_clear_errors_before_any_output(tmp_path, colour_net, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        curate(path, tmp_path / "out", colour_net, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written for a run that cannot start


@pytest.mark.slow
def test_cli_on_the_shared_videos_with_a_weights_file(tmp_path, shared_videos):
    """`vito curate` end to end: a timm classifier from a weights file whose head always says "cup".

    data/shared_candidates.csv holds hand-written titles that say only what each clip shows (the content
    column of shared/data/README.md, checked on the frames: the cockatoo has a salmon crest, so it is not
    ImageNet's sulphur-crested cockatoo).
    """
    import timm
    import torch

    from vito.cli import main

    model = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[RED_CLASS] = 10.0
    torch.save(model.state_dict(), tmp_path / "cup.pt")
    rows = list(csv.DictReader(open(Path(__file__).parent / "data" / "shared_candidates.csv", newline="")))
    with open(tmp_path / "candidates.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "id", "title"])
        writer.writeheader()
        writer.writerows({**row, "path": str(shared_videos / row["path"])} for row in rows)
    args = ["curate", "--candidates", str(tmp_path / "candidates.csv"), "--classifier", "timm:test_resnet",
            "--weights", str(tmp_path / "cup.pt"), "--out", str(tmp_path / "out"), "--max-frames", "8",
            "--image-size", "64", "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # Title matches: cups, coffee mug (9.58 s), soccer ball, flowerpot (1.20 s), bow tie (4.00 s).
    assert summary["reasons"] == {"kept": 1, "no_title_match": 7, "duplicate": 0, "class_cap": 0,
                                  "unreadable": 0, "too_short": 3, "classifier_miss": 1}
    accepted = [json.loads(line) for line in (tmp_path / "out" / "accepted.jsonl").read_text().splitlines()]
    assert [(Path(r["path"]).name, r["class_name"]) for r in accepted] == [("02_cups.mp4", "cup")]
    assert main(args) == 0  # rerunning the finished command changes nothing
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_protocol_like_candidate_paths_are_local_files(tmp_path, colour_net, monkeypatch):
    """``pipe:0`` and ``concat:...`` rows are files of that name next to the candidate file (issue 10 item 4)."""
    write_colour_video(tmp_path / "red.mp4", ["red"] * 120).rename(tmp_path / "pipe:0")
    write_colour_video(tmp_path / "concat:green.mp4", ["blue"] * 120)
    write_colour_video(tmp_path / "green.mp4", ["green"] * 120)  # what FFmpeg's concat: would have read
    with open(tmp_path / "c.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "title", "id"], ["pipe:0", "Red cup", "a"],
                                      ["concat:green.mp4", "A sulphur-crested cockatoo", "b"],
                                      ["subfile,,start,0,end,9,,:gone.mp4", "Cup", "c"]])
    monkeypatch.chdir(tmp_path)  # relative names, where FFmpeg would read them as protocols
    curate("c.csv", tmp_path / "out", colour_net, SETTINGS, classifier_name="mean-colour", progress=False)
    records = {r["id"]: r for name in ("accepted.jsonl", "rejected.jsonl")
               for r in read_records(tmp_path / "out" / name)}
    assert (records["a"]["reason"], records["a"]["class"]) == ("kept", RED_CLASS)
    assert (records["b"]["reason"], records["b"]["class"]) == ("kept", BLUE_CLASS)
    assert records["c"]["reason"] == "unreadable" and "file not found" in records["c"]["error"]


# --------------------------------------------------------------------------------------------------
# Settings that would reject every video, and output folders that are not a run's: one-line errors


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
