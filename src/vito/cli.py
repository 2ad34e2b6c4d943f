"""The ``vito`` command: parses arguments and calls one library function per subcommand, nothing else.

Imports of heavy modules happen inside the handlers so that ``vito --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vito.models.external import SPEC_HELP

ENCODER_HELP = (
    "a vito run folder or checkpoint (.pt), an exported backbone file, or "
    f"{SPEC_HELP} together with --weights FILE"
)


def _add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", required=True, help=ENCODER_HELP)
    parser.add_argument("--weights", type=Path, default=None, help="local weights file for a timm:/torchvision: encoder")


# --------------------------------------------------------------------------------------------------
# Pretraining (issue: pretraining foundation)


def _cmd_demo(args: argparse.Namespace) -> int:
    from vito.demo import run_demo

    run_demo(out_dir=args.out, max_steps=args.max_steps, overrides=args.overrides)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from vito.config import load_config
    from vito.train.loop import pretrain

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.resume is not None:
        from vito.train.checkpoint import resume_config

        config = resume_config(args.resume, overrides)
        out = args.resume
    else:
        if args.out is None:
            raise SystemExit("vito pretrain: --out RUN_DIR is required (or --resume RUN_DIR)")
        config = load_config(args.config, overrides)
        out = args.out
    pretrain(config, data=args.data, run_dir=out, resume=args.resume is not None)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from vito.train.export import export_backbone

    export_backbone(args.run, fmt=args.format, out=args.out)
    return 0


def _add_pretraining_commands(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="pretrain a small VITO model on videos it renders itself, then show what it learned",
        description="The embedded default: renders a few short MP4 videos, pretrains a small VITO model on "
        "them for a few minutes on CPU, and writes a loss curve, attention overlays and a kNN retrieval "
        "score against the same encoder at random initialisation.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    demo.add_argument("--max-steps", type=int, default=None, help="override the demo's number of steps")
    demo.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    demo.set_defaults(handler=_cmd_demo)

    pretrain = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining from videos (VITO or the MoCLR baseline)",
        description="Pretrain on a folder of videos (searched recursively), a manifest (CSV/JSONL with a "
        "path column) or a folder of prepared shards. Runs the same on K processes with "
        "`torchrun --nproc-per-node K -m vito pretrain ...`.",
    )
    pretrain.add_argument("--config", default="vito_r50", help="YAML file or preset name (vito_r50, moclr_r50, demo)")
    pretrain.add_argument("--data", type=Path, required=True, help="video folder, manifest file, or shard folder")
    pretrain.add_argument("--out", type=Path, default=None, help="run folder for checkpoints, logs, TensorBoard")
    pretrain.add_argument("--resume", type=Path, default=None, help="continue the stopped run in this folder")
    pretrain.add_argument("--max-steps", type=int, default=None, help="shortcut for train.max_steps=N")
    pretrain.add_argument("overrides", nargs="*", help="config overrides section.key=value, e.g. model.backbone=resnet18")
    pretrain.set_defaults(handler=_cmd_pretrain)

    export = sub.add_parser(
        "export",
        help="write a trained backbone as a plain state dict for timm, torchvision or detectron2",
        description="Writes the online encoder of a run so that e.g. "
        "timm.create_model(name).load_state_dict(torch.load(FILE), strict=True) works.",
    )
    export.add_argument("run", type=Path, help="run folder or checkpoint file")
    export.add_argument("--format", choices=["timm", "torchvision", "detectron2"], default="timm")
    export.add_argument("--out", type=Path, required=True, help="output file")
    export.set_defaults(handler=_cmd_export)


# --------------------------------------------------------------------------------------------------
# Evaluation suite I: probes, DAVIS, UCF-101, attention pictures (helper D's section)


def _add_probe_video_commands(evals: argparse._SubParsersAction, sub: argparse._SubParsersAction) -> None:
    """`vito eval knn|linear|davis|ucf101` and `vito attention`."""


# --------------------------------------------------------------------------------------------------
# Human alignment and robustness (helper E's section)


def _add_alignment_commands(evals: argparse._SubParsersAction) -> None:
    """`vito eval model-vs-human|imagenet-a|imagenet-vid-robust|imagenet-3dcc|clickme`."""


# --------------------------------------------------------------------------------------------------
# Curation and shards (helper F's section)


def _add_curation_commands(sub: argparse._SubParsersAction) -> None:
    """`vito curate` and `vito prepare`."""


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vito",
        description="VITO: self-supervised video pretraining for general, robust, human-aligned image "
        "representations - pretraining, curation and evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_pretraining_commands(sub)
    evaluate = sub.add_parser("eval", help="evaluate an encoder", description="Evaluate any encoder under one harness.")
    evals = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    _add_probe_video_commands(evals, sub)
    _add_alignment_commands(evals)
    _add_curation_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vito.errors import VitoError

    try:
        return args.handler(args)
    except (VitoError, FileNotFoundError) as error:
        print(f"vito {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
