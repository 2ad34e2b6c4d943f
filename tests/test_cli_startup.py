"""`vito --help`, `vito pretrain --help` and `vito eval NAME --help` import no model zoo: neither timm, nor
torchvision's models (which any torchvision import loads), nor segmentation_models_pytorch. They are most of the
start-up time of a bare command (benchmarks/bench_cli_startup.py measures it); each is imported where a model is
built, never by the modules the command line needs to list its options."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from vito.cli import build_parser
from vito.eval.core.registry import discover

HEAVY = ("timm", "torchvision.models", "segmentation_models_pytorch")
PROBE = """
import contextlib, io, json, sys
from vito.cli import main

for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as stop:
            assert stop.code == 0 and out.getvalue().startswith("usage: vito"), (argv, stop.code)
    loaded = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
    print(json.dumps([argv, loaded]))
"""


def test_help_of_every_command_imports_no_model_zoo() -> None:
    """One process walks every help text (the imports accumulate); after each, none of the heavy modules is there."""
    commands = [["--help"], ["pretrain", "--help"], ["eval", "--help"],
                *(["eval", name, "--help"] for name in sorted(discover()))]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [argv for argv, _ in reports] == commands
    assert {" ".join(argv): loaded for argv, loaded in reports if loaded} == {}


def test_bare_help_imports_not_even_torch() -> None:
    code = ("import sys\nfrom vito.cli import main\ntry:\n    main(['pretrain', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('torch', 'numpy', 'vito.config') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def _evaluation_choices(argv: list[str]) -> list[str]:
    commands = next(a for a in build_parser(argv)._actions if isinstance(a, argparse._SubParsersAction))
    evals = next(a for a in commands.choices["eval"]._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(evals.choices)


def test_eval_name_builds_only_that_evaluations_options() -> None:
    assert _evaluation_choices(["eval", "davis", "--help"]) == ["davis"]
    assert _evaluation_choices(["eval", "--help"]) == _evaluation_choices(["eval", "nothing"]) == sorted(discover())
