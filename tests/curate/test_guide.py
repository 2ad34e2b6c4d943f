"""docs/curation.md's example runs as written: a dry run on the shared videos with an explicitly asked-for
random-init classifier, labelled as such in every output, carried on to shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "curation.md"
LABEL = "random-init classifier: a dry run, not a curation"


def guide_example() -> str:
    """The bash block that follows the ``<!-- example: curation -->`` marker."""
    text = GUIDE.read_text()
    match = re.search(r"<!-- example: curation -->\n```bash\n(.*?)```", text, re.S)
    assert match, "docs/curation.md lost its example block"
    return match.group(1)


def test_the_guide_example_runs_and_every_output_says_dry_run(shared_data: Path, tmp_path: Path) -> None:
    script = f'vito() {{ "{sys.executable}" -m vito "$@"; }}\nset -e\n{guide_example()}'
    import vito

    source = str(Path(vito.__file__).resolve().parents[1])  # this checkout's vito, from any working folder
    env = {**os.environ, "VITO_DATA": str(shared_data),
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    expected = re.findall(r"^vito (?:curate|prepare): .*$", GUIDE.read_text().split("It prints", 1)[1], re.M)
    assert [line.replace(f"-> {tmp_path}/", "-> ") for line in printed] == expected
    out = tmp_path / "curated"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] == LABEL and summary["classifier"] == "timm:resnet18 (random init, seed 0)"
    assert "random init" in json.loads((out / "run.json").read_text())["classifier"]
    records = [json.loads(line) for name in ("accepted.jsonl", "rejected.jsonl")
               for line in (out / name).read_text().splitlines()]
    assert len(records) == 12 and all(r["dry_run"] == LABEL and "random init" in r["classifier"] for r in records)
    shards = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert shards["num_clips"] == 2


def test_curate_without_weights_needs_random_init_asked_for(tmp_path: Path, capsys) -> None:
    from vito.cli import main

    (tmp_path / "c.csv").write_text("path,title\na.mp4,a cup\n")
    args = ["curate", "--candidates", str(tmp_path / "c.csv"), "--classifier", "timm:resnet18", "--out",
            str(tmp_path / "out")]
    assert main(args) == 2
    assert "needs --weights FILE (local ImageNet-1k weights) or, for a dry run" in capsys.readouterr().err
    (tmp_path / "w.pt").write_bytes(b"")
    assert main([*args, "--weights", str(tmp_path / "w.pt"), "--random-init"]) == 2
    assert "(not both)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights", [False, True])
def test_real_runs_carry_no_dry_run_label(tmp_path: Path, weights: bool) -> None:
    """The label is the random classifier's only: a curation with weights writes none (checked on the merge)."""
    from tests.curate.conftest import MeanColourNet, write_colour_video
    from vito.curate.pipeline import CurationSettings, curate

    write_colour_video(tmp_path / "cup.mp4", ["red"] * 12, fps=1)
    (tmp_path / "c.csv").write_text("path,title\ncup.mp4,a cup\n")
    summary = curate(tmp_path / "c.csv", tmp_path / "out", MeanColourNet(), CurationSettings(min_duration=1),
                     classifier_name="mean-colour", progress=False, random_init=not weights)
    record = json.loads((tmp_path / "out" / "accepted.jsonl").read_text())
    assert ("dry_run" in summary) == ("dry_run" in record) == (not weights)
