"""The Python API (``vito/__init__.py``, docs/python.md): every export resolves lazily and carries a docstring,
``evaluate`` writes the result.json ``vito eval`` writes, and the scripts of docs/python.md run as they stand."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vito
from vito.cli import main
from vito.errors import VitoError
from vito.eval.core.encoders import load_encoder
from vito.schema import SchemaError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_every_export_resolves_with_a_docstring_and_import_vito_loads_no_torch() -> None:
    for name in vito.__all__:
        assert getattr(vito, name).__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        vito.nothing  # noqa: B018
    code = "import sys, vito; print(sorted(m for m in ('torch', 'timm', 'vito.config') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _image_folder(root: Path, shared_data: Path) -> Path:
    sources = sorted((shared_data / "imagenet-sample-images").glob("*.JPEG"))
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(2):
            shutil.copy(sources[2 * c + i], root / f"class{c}" / f"{i}.jpg")
    return root


def _comparable(out: Path) -> dict:
    data = json.loads((out / "result.json").read_text())
    del data["seconds"]
    return data


def test_evaluate_writes_the_result_json_vito_eval_writes(tmp_path: Path, shared_data: Path) -> None:
    images = _image_folder(tmp_path / "images", shared_data)
    options = {"train": images, "val": images, "k": [1, 3], "image_size": 32, "num_workers": 0}
    encoder = vito.load_encoder("timm:resnet18", random_init=True, device="cpu")
    result = vito.evaluate("knn", encoder, tmp_path / "api", **options)
    argv = ["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--device", "cpu", "--train", str(images),
            "--val", str(images), "--k", "1", "3", "--image-size", "32", "--num-workers", "0"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    assert _comparable(tmp_path / "api") == _comparable(tmp_path / "cli")
    assert result.metrics["top1"].value == _comparable(tmp_path / "cli")["metrics"]["top1"]["value"]
    unnamed = load_encoder("timm:resnet18")  # built without an EncoderSpec: named by its label and fingerprint
    recorded = vito.evaluate("knn", unnamed, tmp_path / "unnamed", **options).encoder
    assert recorded["spec"] == unnamed.name and recorded["identity"] == unnamed.fingerprint
    with pytest.raises(VitoError, match="already holds another run's result .*encoder spec"):  # another encoder
        vito.evaluate("knn", vito.load_encoder("timm:resnet34", random_init=True, device="cpu"), tmp_path / "api",
                      **options)


def test_evaluate_refuses_what_vito_eval_refuses(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="unknown key 'kk'"):
        vito.evaluate("knn", None, tmp_path / "a", train=tmp_path, val=tmp_path, kk=[1])
    with pytest.raises(SchemaError, match="k\\[0\\]: expected an integer"):
        vito.evaluate("knn", None, tmp_path / "a", train=tmp_path, val=tmp_path, k=["1"])
    with pytest.raises(VitoError, match="needs --encoder"):
        vito.evaluate("knn", None, tmp_path / "a", train=tmp_path, val=tmp_path)
    with pytest.raises(VitoError, match="timm:resnet18 needs --weights FILE"):  # the random-init rule, by text too
        vito.evaluate("knn", "timm:resnet18", tmp_path / "a", train=tmp_path, val=tmp_path)
    with pytest.raises(VitoError, match="unknown evaluation 'knnn'; known: .*knn"):
        vito.evaluate("knnn", None, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert {"knn", "davis", "detect", "segment"} <= set(vito.list_evaluations())


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_the_scripts_of_docs_python_md_run(tmp_path: Path, shared_data: Path, capsys) -> None:
    """The two scripts as a user runs them: each in its own process and a fresh folder, the sample data in
    $VITO_DATA; the short loss example between them (no data) in this process."""
    training, loss_example, evaluation = _python_blocks()
    exec(compile(loss_example, str(DOCS), "exec"), {})
    assert re.fullmatch(r"loss \d+\.\d+ over 6 ordered view pairs\n", capsys.readouterr().out)
    source = str(Path(vito.__file__).parents[1])  # this checkout's vito, whatever the folder the script runs in
    env = {**os.environ, "VITO_DATA": str(shared_data), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    outputs = []
    for index, script in enumerate((training, evaluation)):
        folder = tmp_path / f"script{index}"
        folder.mkdir()
        (folder / "script.py").write_text(script)
        done = subprocess.run([sys.executable, "script.py"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"docs/python.md script {index + 1} failed:\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    losses = [float(x) for x in re.findall(r"step \d: loss (\S+)", outputs[0])]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert "embed (1, 512) pooled (1, 768)" in outputs[1]  # resnet18: res5 512; res4 + res5 = 256 + 512
    result = json.loads((tmp_path / "script1" / "out" / "knn" / "result.json").read_text())
    assert result["encoder"]["spec"] == "runs/tiny" and result["coverage"]["used"] == 320
