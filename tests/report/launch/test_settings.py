"""The resources of a study's jobs: the suite's launcher: block (strict), the command line over it, their
submitit parameters, and the one-line refusals before the report folder is touched."""

from __future__ import annotations

import builtins
import sys

import pytest
import yaml

from vito.cli import main
from vito.errors import VitoError
from vito.report.launch.jobs import LocalLauncher
from vito.report.launch.settings import LauncherSettings, submitit_parameters
from vito.report.suite import load_suite


def _suite(tmp_path, launcher) -> object:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"encoders": {"a": {"encoder": "timm:resnet18", "random_init": True}},
                                    "evaluations": {"knn": {"train": "data", "val": "data"}}, "launcher": launcher}))
    return path


def test_the_suite_block_is_read_strictly(tmp_path) -> None:
    suite = load_suite(_suite(tmp_path, {"partition": "gpu", "gpus-per-node": 8, "timeout_min": 600,
                                         "slurm_additional_parameters": {"exclusive": True, "reservation": "r1"}}))
    assert suite.launcher == LauncherSettings(partition="gpu", gpus_per_node=8, timeout_min=600,
                                              slurm_additional_parameters=["exclusive=True", "reservation=r1"])
    with pytest.raises(VitoError, match="gpu_per_node"):
        load_suite(_suite(tmp_path, {"gpu_per_node": 8}))
    with pytest.raises(VitoError, match="nodes"):
        load_suite(_suite(tmp_path, {"nodes": "two"}))
    assert load_suite(_suite(tmp_path, None)).launcher is None


def test_submitit_parameters_of_a_run_and_of_a_cell() -> None:
    settings = LauncherSettings(partition="gpu", nodes=2, gpus_per_node=8, cpus_per_task=10, mem_gb=400,
                                account="vision", qos="high", constraint="a100",
                                slurm_additional_parameters=["exclusive=true", "reservation=r1"])
    run = submitit_parameters(settings, distributed=True)
    assert run == {"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8, "cpus_per_task": 10, "mem_gb": 400,
                   "timeout_min": 1440, "slurm_partition": "gpu", "slurm_account": "vision", "slurm_qos": "high",
                   "slurm_constraint": "a100", "slurm_signal_delay_s": 120,
                   "slurm_additional_parameters": {"exclusive": True, "reservation": "r1"}}
    cell = submitit_parameters(settings, distributed=False)
    assert (cell["nodes"], cell["tasks_per_node"], cell["gpus_per_node"]) == (1, 1, 8)
    command_line = LauncherSettings(partition="debug", timeout_min=30)
    assert command_line.over(settings).partition == "debug" and command_line.over(settings).nodes == 2
    with pytest.raises(VitoError, match="'exclusive' is not KEY=VALUE"):
        submitit_parameters(LauncherSettings(slurm_additional_parameters=["exclusive"]), True)


def test_the_local_launcher_runs_each_job_here_in_order(tmp_path) -> None:
    from vito.report.launch.jobs import Job

    done = []
    launcher = LocalLauncher()
    assert launcher.submit(Job("a", tmp_path, (done.append, ("a",)))) == "done"
    assert launcher.submit(Job("b", tmp_path, lambda: done.append("b") or 7, depends_on=("a",))) == "done"
    assert done == ["a", "b"] and launcher.waiting_on(("a",)) is None and launcher.outcomes == {"a": None, "b": 7}


def test_a_missing_submitit_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "submitit", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_submitit)
    out = tmp_path / "report"
    assert main(["report", str(_suite(tmp_path, None)), "--out", str(out), "--launcher", "submitit"]) == 2
    assert capsys.readouterr().err.strip() == \
        "vito report: error: --launcher submitit needs submitit: pip install 'vito[slurm]'"
    assert not out.exists()  # refused before the report folder is made


def test_bad_resources_are_refused_before_the_folder_is_made(tmp_path, capsys) -> None:
    pytest.importorskip("submitit")
    out = tmp_path / "report"
    assert main(["report", str(_suite(tmp_path, None)), "--out", str(out), "--launcher", "submitit",
                 "--slurm-additional-parameters", "exclusive"]) == 2
    assert "'exclusive' is not KEY=VALUE" in capsys.readouterr().err and not out.exists()
    assert main(["report", str(_suite(tmp_path, {"nodes": 2}))]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
