"""`vito report` on fake evaluations: the grid, its cache, dependency order, failures, --only and --dry-run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vito.cli import main
from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec
from vito.eval.core.result import Coverage, Metric, Result, read_result
from vito.eval.core.result_writer import write_result
from vito.report.build import make_report


def _suite(tmp_path: Path, encoders: dict, evaluations: dict | None = None, references: dict | None = None) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    suite = {"encoders": encoders,
             "evaluations": evaluations if evaluations is not None else {
                 "imagenet-a": {"root": "data"},  # listed before linear: the grid must still run linear first
                 "linear": {"train": "data"},
                 "knn": {"train": "data", "k": 20}}}
    if references:
        suite["references"] = references
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _weights(tmp_path: Path, name: str, content: bytes = b"w") -> str:
    path = tmp_path / f"{name}.pth"
    path.write_bytes(content)
    return str(path)


TWO = {"a": {"encoder": "timm:resnet18", "random_init": True}, "b": {"encoder": "timm:resnet34", "random-init": True}}


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _cell(out: Path, row: str, evaluation: str) -> dict:
    return next(c for c in _results(out)["cells"] if c["row"] == row and c["evaluation"] == evaluation)


def test_every_cell_is_computed_once_and_written(tmp_path, fakes) -> None:
    out = tmp_path / "report"
    run = make_report(_suite(tmp_path, TWO), out, echo=lambda _: None)
    assert len(run.computed) == 6 and not run.failed
    # loaded afresh for each cell, as `vito eval` does: an evaluation may change its encoder (DAVIS unstrides res4)
    assert sorted(fakes.loads) == ["timm:resnet18"] * 3 + ["timm:resnet34"] * 3
    document = _results(out)
    assert {(c["row"], c["evaluation"]) for c in document["cells"]} == {
        (r, e) for r in "ab" for e in ("linear", "imagenet-a", "knn")}
    for cell in document["cells"]:
        stored = read_result(out / cell["folder"])
        assert cell["metrics"] == {name: m.value for name, m in stored.metrics.items()}  # unrounded
        assert cell["status"] == "computed" and cell["seconds"] is not None
        assert cell["folder"] == f"cells/{cell['row']}/{cell['evaluation']}"
    assert [g["group"] for g in document["groups"]] == ["scene", "ood"]  # the paper's order, not the suite's
    assert (out / "index.html").is_file() and (out / "report.md").is_file()


def test_linear_head_feeds_the_classifier_and_runs_first(tmp_path, fakes) -> None:
    encoders = {**TWO, "own": {"encoder": "timm:resnet50", "random_init": True, "classifier": "own"}}
    out = tmp_path / "report"
    make_report(_suite(tmp_path, encoders), out, echo=lambda _: None)
    order = [(name, encoder) for name, encoder, _ in fakes.calls]
    for encoder in ("timm:resnet18", "timm:resnet34"):
        assert order.index(("linear", encoder)) < order.index(("imagenet-a", encoder))
    classifiers = {encoder: settings.classifier for name, encoder, settings in fakes.calls.of("imagenet-a")}
    assert classifiers["timm:resnet18"] == str(out / "cells/a/linear/linear_head.pt")
    assert classifiers["timm:resnet34"] == str(out / "cells/b/linear/linear_head.pt")
    assert classifiers["timm:resnet50"] == "own"


def test_rerun_computes_only_the_missing_cells(tmp_path, fakes) -> None:
    out = tmp_path / "report"
    make_report(_suite(tmp_path, TWO), out, echo=lambda _: None)
    assert len(fakes.calls) == 6
    fakes.calls.clear()
    fakes.loads.clear()
    run = make_report(_suite(tmp_path, TWO), out, echo=lambda _: None)
    assert fakes.calls == [] and fakes.loads == [] and len(run.computed) == 0  # nothing loaded, nothing run
    assert {c["status"] for c in _results(out)["cells"]} == {"cached"}

    three = {**TWO, "c": {"encoder": "timm:resnet18", "weights": _weights(tmp_path, "c")}}
    run = make_report(_suite(tmp_path, three), out, echo=lambda _: None)
    assert sorted((name, encoder) for name, encoder, _ in fakes.calls) == [
        ("imagenet-a", "timm:resnet18:c.pth"), ("knn", "timm:resnet18:c.pth"), ("linear", "timm:resnet18:c.pth")]
    assert len(run.computed) == 3

    fakes.calls.clear()  # another setting of one evaluation: only its cells
    make_report(_suite(tmp_path, three, {"imagenet-a": {"root": "data"}, "linear": {"train": "data"},
                                         "knn": {"train": "data", "k": 10}}), out, echo=lambda _: None)
    assert sorted(name for name, _, _ in fakes.calls) == ["knn"] * 3

    fakes.calls.clear()  # a new head (linear recomputed) makes the cells that used the old one stale
    make_report(_suite(tmp_path, three, {"imagenet-a": {"root": "data"}, "linear": {"train": "data", "epochs": 2},
                                         "knn": {"train": "data", "k": 10}}), out, echo=lambda _: None)
    assert sorted(name for name, _, _ in fakes.calls) == ["imagenet-a"] * 3 + ["linear"] * 3


def test_same_weights_under_another_name_are_other_weights(tmp_path, fakes) -> None:
    """Identity is the feature cache's: a different weights file (even same architecture) is a different row."""
    out = tmp_path / "report"
    one = {"x": {"encoder": "timm:resnet18", "weights": _weights(tmp_path, "x1")}}
    make_report(_suite(tmp_path, one, {"knn": {"train": "data"}}), out, echo=lambda _: None)
    other = {"x": {"encoder": "timm:resnet18", "weights": _weights(tmp_path, "x2", b"other")}}
    fakes.calls.clear()
    make_report(_suite(tmp_path, other, {"knn": {"train": "data"}}), out, echo=lambda _: None)
    assert len(fakes.calls) == 1  # same row name, other weights: recomputed, not reused


def test_cell_written_beforehand_by_vito_eval_is_picked_up(tmp_path, fakes) -> None:
    spec = EncoderSpec("timm:resnet18", random_init=True)
    data = tmp_path / "data"
    data.mkdir()
    folder = tmp_path / "report" / "cells" / "a" / "knn"
    result = Result("knn", {"top1": Metric(0.123456789, "proportion", "top-1")},
                         {"train": str(data), "k": 20, "used": 4, "num_workers": 8}, Coverage(4, 4),
                         encoder={"spec": "timm:resnet18", "identity": spec.identity()})
    write_result(result, folder)
    make_report(_suite(tmp_path, {"a": TWO["a"]}, {"knn": {"train": "data"}}), tmp_path / "report",
                echo=lambda _: None)
    assert fakes.calls == []
    assert _cell(tmp_path / "report", "a", "knn")["metrics"]["top1"] == 0.123456789
    assert "12.3" in (tmp_path / "report" / "report.md").read_text()


def test_failing_cell_is_marked_the_rest_completes_and_exit_is_nonzero(tmp_path, fakes, capsys) -> None:
    encoders = {**TWO, "broken": {"encoder": "timm:resnet18", "weights": _weights(tmp_path, "broken", b"broken")}}
    suite = _suite(tmp_path, encoders, {"linear": {"train": "missing-folder"}, "imagenet-a": {"root": "data"},
                                        "knn": {"train": "data"}})
    out = tmp_path / "report"
    assert main(["report", str(suite), "--out", str(out)]) == 1
    document = _results(out)
    status = {(c["row"], c["evaluation"]): c for c in document["cells"]}
    assert status[("a", "knn")]["status"] == "computed" and status[("b", "knn")]["status"] == "computed"
    assert status[("a", "linear")]["status"] == "failed"
    assert "missing-folder" in status[("a", "linear")]["error"]
    assert "head of the linear cell" in status[("a", "imagenet-a")]["error"]  # its dependency failed
    assert all(status[("broken", e)]["status"] == "failed" and "do not fit" in status[("broken", e)]["error"]
               for e in ("linear", "imagenet-a", "knn"))
    page = (out / "index.html").read_text()
    assert page.count('class="failed"') >= 5 and "missing-folder" in page
    assert "## Failures" in (out / "report.md").read_text()
    assert json.loads((out / "cells/a/linear/error.json").read_text())["error"].startswith("image folder not found")
    assert "FAILED" in capsys.readouterr().out
    (tmp_path / "missing-folder").mkdir()  # fixed: the failed cells are retried, the good ones reused
    fakes.calls.clear()
    assert main(["report", str(suite), "--out", str(out), "--only", "a", "--only", "b"]) == 0
    assert sorted(n for n, _, _ in fakes.calls) == ["imagenet-a", "imagenet-a", "linear", "linear"]


def test_only_selects_rows_and_evaluations_with_their_dependency(tmp_path, fakes) -> None:
    out = tmp_path / "report"
    suite = _suite(tmp_path, TWO)
    make_report(suite, out, only=["knn"], echo=lambda _: None)
    assert sorted(e for _, e, _ in fakes.calls) == ["timm:resnet18", "timm:resnet34"]
    assert {c["status"] for c in _results(out)["cells"] if c["evaluation"] != "knn"} == {"not run"}
    assert "not computed" in (out / "index.html").read_text()
    fakes.calls.clear()
    make_report(suite, out, only=["b", "imagenet-a"], echo=lambda _: None)  # b's imagenet-a needs b's linear
    assert [(n, e) for n, e, _ in fakes.calls] == [("linear", "timm:resnet34"), ("imagenet-a", "timm:resnet34")]
    with pytest.raises(Exception, match="--only nope: not a row"):
        make_report(suite, out, only=["nope"], echo=lambda _: None)


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path, fakes, capsys) -> None:
    out = tmp_path / "report"
    suite = _suite(tmp_path, TWO)
    make_report(suite, out, only=["a"], echo=lambda _: None)
    fakes.calls.clear()
    fakes.loads.clear()
    assert main(["report", str(suite), "--out", str(out / "other"), "--dry-run"]) == 0
    assert not (out / "other").exists()
    assert main(["report", str(suite), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert fakes.calls == [] and fakes.loads == []
    assert "b × linear: would compute" in printed and "b × imagenet-a: would compute" in printed
    assert "a × knn" not in printed.split("dry run")[-1] and "3 of 6 cells would be computed" in printed


def test_reference_rows_use_the_scoring_only_mode(tmp_path, fakes) -> None:
    (tmp_path / "osvos").mkdir()
    suite = _suite(tmp_path, {"a": TWO["a"]}, {"davis": {"davis_root": "data"}, "knn": {"train": "data"},
                                               "fake-scores": {}},
                   references={"osvos": {"davis": {"results": "osvos"}},
                               "psp": {"fake-scores": {"predictions": "psp"}}})
    out = tmp_path / "report"
    make_report(suite, out, echo=lambda _: None)
    davis = {encoder: settings for name, encoder, settings in fakes.calls.of("davis")}
    assert davis[None].results == tmp_path / "osvos" and davis["timm:resnet18"].results is None
    document = _results(out)
    assert [r["kind"] for r in document["rows"]] == ["encoder", "reference", "reference"]
    assert {(c["row"], c["evaluation"]) for c in document["cells"]} == {  # scoring-only: no encoder cell
        ("a", "davis"), ("a", "knn"), ("osvos", "davis"), ("psp", "fake-scores")}
    assert [g["title"] for g in document["groups"]] == [
        "Scene understanding", "Scene understanding: dense transfer", "Video understanding"]
    assert fakes.calls.of("fake-scores")[0][2].predictions == tmp_path / "psp"
    assert "*osvos* (reference)" in (out / "report.md").read_text()


def test_columns_choose_the_metrics_the_tables_show(tmp_path, fakes) -> None:
    suite = _suite(tmp_path, {"a": TWO["a"]}, {"knn": {"train": "data"}, "imagenet-a": {"root": "data"}})
    text = suite.read_text() + "columns: {knn: [count, top1, nope]}\n"
    suite.write_text(text)
    out = tmp_path / "report"
    make_report(suite, out, echo=lambda _: None)
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| encoder | knn"))
    assert header == "| encoder | knn · images (count) | knn · top-1 (%) | knn · nope (no such metric) |"
    assert set(_cell(out, "a", "knn")["metrics"]) == {"top1", "top1_k", "count"}  # results.json keeps them all
    suite.write_text(text.replace("columns: {knn: [count, top1, nope]}", ""))
    make_report(suite, out, echo=lambda _: None)
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| encoder | knn"))
    assert header == "| encoder | knn · top-1 (%) | knn · images (count) |"  # top1_k: same label, same numbers: once
    suite.write_text(text.replace("knn: [", "knnn: ["))
    with pytest.raises(Exception, match="columns.knnn: 'knnn' is not one of the suite's evaluations"):
        make_report(suite, out, echo=lambda _: None)


def test_partial_coverage_and_undefined_values_are_flagged(tmp_path, fakes) -> None:
    suite = _suite(tmp_path, {"a": TWO["a"]}, {"knn": {"train": "data", "used": 3}, "imagenet-a": {"root": "data"}})
    out = tmp_path / "report"
    make_report(suite, out, echo=lambda _: None)
    markdown = (out / "report.md").read_text()
    assert "## Partial coverage" in markdown and "a × knn: 3/4 (fake)" in markdown
    knn_row = next(line for line in markdown.splitlines() if line.startswith("| **a** |") and "†" in line)
    assert knn_row.count("†") == 2  # both knn columns of row a
    page = (out / "index.html").read_text()
    assert page.count('class="partial"') == 2 and "n/a" in page and "+-0.250" not in page and "-0.250" in page


@pytest.mark.parametrize(("text", "message"), [
    ("encoders: {a: {encoder: 'timm:resnet18', random_init: true}}\nevaluation: {}\n", "unknown key 'evaluation'"),
    ("encoders: {a: {encoder: 'timm:resnet18', random-inti: true}}\nevaluations: {knn: {train: d}}\n",
     "encoders.a: unknown key 'random_inti'"),
    ("encoders: {a: {encoder: 'timm:resnet18'}}\nevaluations: {knn: {train: d}}\n", "--random-init"),
    ("encoders: {a: {encoder: 'timm:resnet18', random_init: true}}\nevaluations: {knnn: {train: d}}\n",
     "evaluations.knnn: no such evaluation"),
    ("encoders: {a: {encoder: 'timm:resnet18', random_init: true}}\nevaluations: {knn: {trian: d}}\n",
     "evaluations.knn: .*trian"),
    ("encoders: {a: {encoder: 'timm:resnet18', random_init: true}}\nevaluations: {knn: {train: d}}\n"
     "references: {h: {knn: {train: e}}}\n", "references.h: knn has no scoring-only mode"),
    ("encoders: {a/b: {encoder: 'timm:resnet18', random_init: true}, a+b: {encoder: 'timm:resnet18', "
     "random_init: true}}\nevaluations: {knn: {train: d}}\n", "rows 'a/b' and 'a\\+b' both give the folder name"),
    ("encoders: [a]\nevaluations: {knn: {train: d}}\n", "encoders: expected a mapping"),
    ("encoders: {a: {encoder: 'timm:resnet18', random_init: true}}\n", "names no evaluations"),
    ("{{{", "cannot read suite"),
    ("references: {r: {fake-scores: {}}}\nevaluations: {fake-scores: {predicton: p}}\n",
     "evaluations.fake-scores: unknown key 'predicton'"),
    ("references: {r: {fake-scores: {}}}\nevaluations: {fake-scores: {}}\n",
     "references.r.fake-scores: .*missing key .predictions."),
])
def test_bad_suite_is_refused_naming_the_key(tmp_path, fakes, capsys, text, message) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    assert main(["report", str(suite), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(suite) in error or "cannot read" in error
    import re
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists() and fakes.calls == []


def test_suite_with_non_utf8_bytes_is_a_clear_error(tmp_path, fakes, capsys) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(b"encoders: {a: {encoder: '\xff\xfe'}}\n")
    assert main(["report", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read suite" in capsys.readouterr().err


def test_out_that_is_not_a_report_folder_is_refused(tmp_path, fakes, capsys) -> None:
    suite = _suite(tmp_path, {"a": TWO["a"]}, {"knn": {"train": "data"}})
    project = tmp_path / "project"
    project.mkdir()
    (project / "index.html").write_text("<p>my page</p>")
    assert main(["report", str(suite), "--out", str(project)]) == 2
    assert "no vito report wrote" in capsys.readouterr().err
    assert (project / "index.html").read_text() == "<p>my page</p>" and fakes.calls == []
    (tmp_path / "file").write_text("x")
    assert main(["report", str(suite), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    out = tmp_path / "report"  # its own folder is fine, again and again
    assert main(["report", str(suite), "--out", str(out)]) == 0
    assert main(["report", str(suite), "--out", str(out)]) == 0


def test_a_report_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, fakes) -> None:
    out = tmp_path / "report"
    out.mkdir()
    lock = out / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "kind": "report"}))
    with pytest.raises(VitoError, match=f"{out} is in use by the run of process {os.getpid()}"):
        make_report(_suite(tmp_path, TWO), out, echo=lambda _: None)
    assert fakes.calls == [] and not (out / "results.json").exists()  # nothing computed or written

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "kind": "report"}))
    printed: list[str] = []
    run = make_report(_suite(tmp_path, TWO), out, echo=printed.append)
    assert len(run.computed) == 6 and not lock.exists()  # released at the end
    assert any("took over the stale lock" in line for line in printed)


def test_a_full_disk_is_a_clear_error_and_the_previous_report_stays_whole(tmp_path, fakes, capsys,
                                                                          monkeypatch) -> None:
    import errno

    import vito.io

    suite = _suite(tmp_path, {"a": TWO["a"]}, {"knn": {"train": "data"}})
    out = tmp_path / "report"
    assert main(["report", str(suite), "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in ("results.json", "report.md", "index.html")}

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vito.io.os, "fsync", disk_full)  # every atomic write fails, as on a full disk
    capsys.readouterr()
    assert main(["report", str(suite), "--out", str(out)]) == 2  # cached cells, then the outputs fail
    error = capsys.readouterr().err
    assert error.startswith(f"vito report: error: cannot write the report in {out}: No space left on device")
    assert {name: (out / name).read_bytes() for name in before} == before and not (out / ".lock").exists()
    fresh = tmp_path / "fresh"
    assert main(["report", str(suite), "--out", str(fresh)]) == 2  # the cell fails too: no error.json either
    assert "a × knn: FAILED: OSError" in capsys.readouterr().out and not (fresh / ".lock").exists()


def test_a_suite_naming_an_encoder_twice_is_refused(tmp_path, fakes, capsys) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("encoders:\n  a: {encoder: 'timm:resnet18', random_init: true}\n"
                     "  a: {encoder: 'timm:resnet34', random_init: true}\nevaluations: {knn: {train: d}}\n")
    assert main(["report", str(suite), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "duplicate key 'a' (first given at line 2)" in error and error.count("\n") <= 6
    assert not (tmp_path / "out").exists() and fakes.calls == []


def test_a_lock_from_another_host_offers_what_vito_report_can_do(tmp_path, fakes, capsys) -> None:
    suite = _suite(tmp_path, {"a": {"encoder": "timm:resnet18", "random_init": True}}, {"knn": {"train": "data"}})
    out = tmp_path / "report"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "kind": "report"}))
    assert main(["report", str(suite), "--out", str(out)]) == 2
    assert "take it with vito report --break-lock" in capsys.readouterr().err
    assert main(["report", str(suite), "--out", str(out), "--break-lock"]) == 0
    assert not (out / ".lock").exists()


def test_report_md_shows_user_text_literally_never_as_html(tmp_path, fakes) -> None:
    hostile = "<iframe src=javascript:alert(4)>"
    suite = _suite(tmp_path, {"a": {"encoder": hostile}}, {"knn": {"train": "data"}})
    out = tmp_path / "report"
    make_report(suite, out, echo=lambda _: None)
    markdown = (out / "report.md").read_text()
    assert "<iframe" not in markdown and "&lt;iframe src=javascript:alert(4)&gt;" in markdown
    assert "<iframe" not in (out / "index.html").read_text()
