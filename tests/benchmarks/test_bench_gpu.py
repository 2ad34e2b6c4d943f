"""The GPU benchmark's reduced mode runs every section on the CPU, so that the command cannot rot."""

from __future__ import annotations

import json

from benchmarks import bench_gpu


def test_smoke_run_measures_every_section(tmp_path):
    report = bench_gpu.main(["--smoke", "--out", str(tmp_path)])
    sections = ["model_step", "input_cpu_0", "loop_cpu_0", "input_cuda_0", "loop_cuda_0", "feature_extraction",
                "davis_propagation"]
    for name in sections:
        assert "error" not in report[name], (name, report[name])
    assert report["loop_cuda_0"]["decode"] == "cuda"  # the device-decode path, here on CPU tensors
    assert report["model_step"]["views_per_s"] > 0 and report["davis_propagation"]["frames_per_s"] > 0
    assert json.loads((tmp_path / "gpu.json").read_text())["device"].startswith("cpu")
    assert "smoke run" in (tmp_path / "gpu.md").read_text()
