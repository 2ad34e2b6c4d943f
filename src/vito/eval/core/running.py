"""Running one evaluation: the path ``vito eval NAME`` and ``vito report`` share.

Check the settings and that ``OUT`` holds no other run, load the encoder, run, stamp the Result with what
made it (encoder, settings, versions, time) and write it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vito.engine.distributed import launched_rank
from vito.errors import VitoError
from vito.eval.core.encoder_spec import EncoderSpec, add_encoder_arguments, describe_encoder
from vito.eval.core.encoders import Encoder
from vito.eval.core.registry import discover, get, recorded_settings, refuse_unused
from vito.eval.core.result import RESULT_JSON, Result, plain, read_result
from vito.eval.core.result_writer import write_result
from vito.schema import add_arguments, from_namespace


def package_versions() -> dict[str, str]:
    """Versions that change numbers: python, torch, torchvision, timm, numpy, vito."""
    versions = {"python": platform.python_version()}
    for name in ("vito", "torch", "torchvision", "timm", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def add_evaluation_commands(evals: argparse._SubParsersAction, only: str | None = None) -> None:
    """``vito eval NAME`` for every registered evaluation (or only for ``only`` when it is one): encoder options,
    ``--out`` and its Settings."""
    registry = discover()
    names = [only] if only in registry else sorted(registry)
    for name in names:
        cls = registry[name]
        parser = evals.add_parser(name, help=cls.help, description=cls.description or cls.help)
        if cls.needs_encoder:
            add_encoder_arguments(parser, required=cls.needs_encoder is True)
        parser.add_argument("--out", type=Path, required=True, help="output folder (result.json, result.md, pictures)")
        add_arguments(parser, cls.Settings)
        parser.set_defaults(evaluation_class=cls)


def run_from_args(args: argparse.Namespace) -> Result:
    """The ``vito eval NAME`` handler: Settings and EncoderSpec from the arguments, then ``run_evaluation``."""
    cls = args.evaluation_class
    spec = EncoderSpec.from_args(args) if cls.needs_encoder and args.encoder is not None else None
    if spec is None and cls.needs_encoder and (args.weights is not None or args.random_init):
        raise VitoError("--weights and --random-init go with --encoder ENC")
    return run_evaluation(cls.name, from_namespace(cls.Settings, args), args.out, spec)


def stamped_settings(given: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """The settings a Result keeps: every field as given, then what the evaluation recorded of its own.

    Why the given values win: ``vito report`` reuses a stored Result only when its settings equal the
    suite's, field by field. An evaluation that records a field it resolved (a default list of lrs in place
    of "none given") would make every stored Result look stale, so such a value is kept as ``NAME_as_run``.
    """
    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)

    stamped = dict(given)
    for key, value in recorded.items():
        stamped[key if key not in given or same(value, given[key]) else f"{key}_as_run"] = value
    return stamped


RERUN_FLAGS = ("resume", "overwrite")  # settings that say how to continue a run, not which run it is
# Settings that say where or how fast, never what is computed (batches do not depend on the worker count): a
# rerun differing only in them is the same run, and vito report does not recompute a cell for them
NON_RESULT_SETTINGS = frozenset({"cache_dir", "num_workers", "loggers", *RERUN_FLAGS})


def check_out_dir(name: str, settings: Any, out_dir: Path, described: dict[str, Any] | None) -> None:
    """Refuse an ``OUT`` that holds another run's Result, before anything is computed or written.

    Why: ``write_result`` would replace that run's result.json and result.md (and its pictures) without a
    word. The same evaluation with the same encoder and settings is this run again (``vito report`` and
    ``--resume`` rely on rerunning into a folder) and may replace it; so may ``--overwrite`` where an
    evaluation has it. A non-folder ``OUT`` or an unreadable result.json are refused too. ``described``: the
    encoder as the Result records it (``EncoderSpec.describe``), None for an evaluation run without one.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VitoError(f"--out {out_dir} is a file, not a folder")
    if not (out_dir / RESULT_JSON).exists() or getattr(settings, "overwrite", False) is True:
        return
    try:
        previous = read_result(out_dir)
    except VitoError as error:
        raise VitoError(f"--out {out_dir} already holds a {RESULT_JSON} that is not a vito result ({error}); "
                        "choose another --out") from error
    given = {k: v for k, v in recorded_settings(get(name), settings, described is not None).items()
             if k not in NON_RESULT_SETTINGS}
    encoder = plain(described) if described is not None else {}
    differences = [f"evaluation {previous.evaluation}"] if previous.evaluation != name else []
    differences += [f"encoder {k}" for k, v in encoder.items() if previous.encoder.get(k) != v]
    if described is None and previous.encoder.get("spec"):
        differences.append(f"encoder {previous.encoder['spec']}")
    differences += [k for k, v in given.items() if json.dumps(previous.settings.get(k), sort_keys=True, default=str)
                    != json.dumps(v, sort_keys=True, default=str)]
    if differences:
        overwrite = ", give --overwrite" if hasattr(settings, "overwrite") else ""
        raise VitoError(f"--out {out_dir} already holds another run's result (different settings, evaluation or "
                        f"encoder: {', '.join(differences[:5])}); choose another --out{overwrite}, or remove "
                        f"{out_dir / RESULT_JSON}")


def run_evaluation(name: str, settings: Any, out_dir: Path, spec: EncoderSpec | None = None,
                   encoder: Encoder | None = None) -> Result:
    """Check (the settings, and that ``out_dir`` holds no other run), load the encoder (if any), run, stamp
    encoder/settings/versions/time, and write the Result.

    ``encoder``: an encoder already loaded (the Python API's ``vito.evaluate``), in place of ``spec``; the
    Result describes it by the EncoderSpec it was loaded from (``describe_encoder``), as ``vito eval`` would.
    """
    cls = get(name)
    evaluation = cls()
    if spec is not None and encoder is not None:
        raise ValueError("run_evaluation takes an EncoderSpec or a loaded Encoder, not both")
    has_encoder = spec is not None or encoder is not None
    if has_encoder and cls.needs_encoder is False:
        raise VitoError(f"vito eval {name} takes no encoder")
    if spec is not None:
        spec.check()
    evaluation.check(settings, has_encoder)
    refuse_unused(cls, settings, has_encoder)
    described = spec.describe() if spec is not None else describe_encoder(encoder) if encoder is not None else None
    check_out_dir(name, settings, Path(out_dir), described)
    started = time.perf_counter()
    if spec is not None:
        encoder = spec.load()
    result = evaluation.run(encoder, settings, Path(out_dir))
    result.settings = stamped_settings(recorded_settings(cls, settings, has_encoder), result.settings)
    if described is not None:
        result.encoder = {**described, "name": encoder.name, **result.encoder}
    result.seconds = result.seconds or time.perf_counter() - started
    result.versions = result.versions or package_versions()
    if launched_rank() == 0:  # under torchrun every process holds the same Result; one writes it
        write_result(result, Path(out_dir))
    return result
