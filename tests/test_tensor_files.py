"""The one reader of tensor files: damaged, empty, foreign and code-holding files are one-line errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from safetensors.torch import save_file

from vito.cli import main
from vito.errors import VitoError
from vito.eval.core import running
from vito.tensor_files import load_tensor_file


def test_safetensors_and_torch_files_round_trip(tmp_path) -> None:
    save_file({"w": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        assert torch.equal(load_tensor_file(tmp_path / name, "weights file")["w"], torch.ones(2))


def test_a_truncated_safetensors_file_is_one_line_naming_it(tmp_path, capsys) -> None:
    save_file({"w": torch.ones(1000)}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(VitoError, match="w.safetensors is not a readable weights file"):
        load_tensor_file(tmp_path / "w.safetensors", "weights file")
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--weights", str(tmp_path / "w.safetensors"),
                 "--train", str(tmp_path), "--val", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "w.safetensors" in err


def test_a_file_holding_python_objects_is_refused_without_advice_to_run_it(tmp_path) -> None:
    torch.save({"w": torch.ones(2), "note": Fraction(1, 3)}, tmp_path / "objects.pt")  # not a plain value
    with pytest.raises(VitoError, match="holds code or Python objects, not only tensors: vito will not load it") \
            as refused:
        load_tensor_file(tmp_path / "objects.pt", "checkpoint")
    assert "weights_only=False" not in str(refused.value).replace("with weights_only=True", "")
    assert "\n" not in str(refused.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(VitoError, match="empty.pt is empty"):
        load_tensor_file(tmp_path / "empty.pt", "checkpoint")


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(running, "run_from_args", interrupted)
    assert main(["eval", "knn", "--encoder", "timm:resnet18", "--random-init", "--train", str(tmp_path), "--val",
                 str(tmp_path), "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert err == "vito eval: interrupted: stopped at once (a run continues from its last checkpoint)\n"
