"""The ``vito`` command: parses arguments and calls one library function per subcommand, nothing else.

Imports of heavy modules happen inside the handlers so that ``vito --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vito.engine.loggers import LOGGERS as LOGGER_NAMES
from vito.engine.progress import end_bars
from vito.errors import VitoError
from vito.models.external import SPEC_HELP
from vito.report.launch.jobs import LAUNCHERS
from vito.report.launch.settings import LauncherSettings
from vito.schema import add_arguments, from_namespace

# --------------------------------------------------------------------------------------------------
# Pretraining (issue: pretraining foundation)

DEFAULT_PRETRAIN_CONFIG = "vito_r50"


def _cmd_demo(args: argparse.Namespace) -> int:
    from vito.demo import run_demo

    run_demo(out_dir=args.out, max_steps=args.max_steps, overrides=args.overrides)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from vito.config import load_config
    from vito.engine.signals import exit_status
    from vito.pretrain.loop import pretrain

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.resume is not None:
        from vito.pretrain.resume import resume_config, resume_target

        out, checkpoint = resume_target(args.resume)
        if args.out is not None and args.out.resolve() != out.resolve():
            raise SystemExit("vito pretrain: --resume RUN continues RUN in its own folder: leave out --out")
        config = resume_config(out, overrides, config=args.config)
    else:
        if args.out is None or args.data is None:
            raise SystemExit("vito pretrain: --data and --out RUN_DIR are required (or --resume RUN_DIR)")
        config = load_config(args.config or DEFAULT_PRETRAIN_CONFIG, overrides)
        out, checkpoint = args.out, None
    result = pretrain(config, data=args.data, run_dir=out, resume=args.resume is not None, checkpoint=checkpoint,
                      overwrite=args.overwrite, break_lock=args.break_lock)
    return 0 if result.stopped_by is None else exit_status(result.stopped_by)


def _cmd_export(args: argparse.Namespace) -> int:
    from vito.pretrain.export import export

    exported = export(args.run, args.format, args.out, overwrite=args.overwrite)
    for path in exported.files:
        print(f"wrote {path}")
    print(f"{exported.architecture} encoder of step {exported.step}; load it with: {exported.how_to_load}")
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
        help="self-supervised pretraining from videos (VITO) or still images (the MoCLR baseline)",
        description="Pretrain on a folder of videos or of images (searched recursively), a manifest (CSV/JSONL "
        "with a path column) or a folder of prepared shards. Each image is a one-frame video: train on images "
        "with data.sampling=same (the moclr_r50 preset: the paper's MoCLR-on-ImageNet baseline). Runs the same on K processes with "
        "`torchrun --nproc-per-node K -m vito pretrain ...`. SIGTERM, SIGINT or SIGUSR1 finish the current "
        "step, write a checkpoint and exit with status 128 + the signal number (SIGUSR1: 143, like SIGTERM); "
        "see `vito docs cluster`.",
    )
    pretrain.add_argument("--config", default=None,
                          help="YAML file or preset name (vito_r50, moclr_r50, demo); default "
                          f"{DEFAULT_PRETRAIN_CONFIG} for a new run, the run's own config.yaml on --resume (a --config given then must match it)")
    pretrain.add_argument("--data", type=Path, default=None,
                          help="folder of videos or images, manifest file, or shard folder (on --resume: the "
                          "run's own)")
    pretrain.add_argument("--out", type=Path, default=None,
                          help="run folder for checkpoints, logs, TensorBoard (new or empty, or see --overwrite)")
    pretrain.add_argument("--resume", type=Path, default=None,
                          help="continue the stopped run in this folder (from its newest intact checkpoint), or "
                          "from one of its checkpoint files RUN/checkpoints/step_*.pt")
    pretrain.add_argument("--overwrite", action="store_true",
                          help="start afresh in an --out that holds a run: deletes its checkpoints and logs")
    pretrain.add_argument("--break-lock", action="store_true",
                          help="take a run folder locked by a run on another host (only when that run is gone)")
    pretrain.add_argument("--max-steps", type=int, default=None, help="shortcut for train.max_steps=N")
    pretrain.add_argument("overrides", nargs="*", help="config overrides section.key=value, e.g. model.backbone=resnet18")
    pretrain.set_defaults(handler=_cmd_pretrain)

    export = sub.add_parser(
        "export",
        help="write a trained encoder for timm, torchvision, detectron2, safetensors or the Hugging Face hub",
        description="Writes the online encoder of a run (the newest intact checkpoint of a run folder, or a "
        "checkpoint file) so that other libraries load it without vito. timm/torchvision (.pt/.pth) and "
        "detectron2 (.pkl): a plain state dict plus OUT.json naming the architecture. safetensors (.safetensors): "
        "the timm network without a classifier (num_classes=0), with run, step and config digest in the file's "
        "metadata. timm-hub: --out is a folder with config.json + model.safetensors that "
        "timm.create_model('local-dir:FOLDER', pretrained=True) loads and `huggingface-cli upload` publishes as is.",
    )
    export.add_argument("run", type=Path, help="run folder or checkpoint file")
    export.add_argument("--format", choices=["timm", "torchvision", "detectron2", "safetensors", "timm-hub"],
                        default="timm", help="default: timm; the --out suffix must match it")
    export.add_argument("--out", type=Path, required=True, help="output file (timm-hub: output folder)")
    export.add_argument("--overwrite", action="store_true", help="replace an export already at --out")
    export.set_defaults(handler=_cmd_export)


# --------------------------------------------------------------------------------------------------
# Evaluation: `vito eval NAME` from the registry (vito.eval.core.registry), and `vito attention`


def _cmd_eval(args: argparse.Namespace) -> int:
    from vito.engine.distributed import launched_rank
    from vito.engine.finetune import FinetuneStopped
    from vito.engine.signals import exit_status
    from vito.eval.core.result_writer import summary_line
    from vito.eval.core.running import run_from_args

    try:
        result = run_from_args(args)
    except FinetuneStopped as stopped:  # a fine-tuning evaluation stopped by a signal: exit 128 + signal
        print(f"vito eval {args.evaluation}: {stopped}", file=sys.stderr)
        return exit_status(stopped.stopped_by)
    if launched_rank() == 0:  # one line per command, not one per torchrun process
        print(f"{summary_line(result)}  ->  {args.out}/result.json")
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from vito.eval.attention import save_attention_pictures
    from vito.eval.core.encoder_spec import EncoderSpec

    report = save_attention_pictures(EncoderSpec.from_args(args).load(), args.inputs, args.out, args.image_size,
                                     args.frames_per_video)
    print(f"{len(report['pictures'])} attention pictures  ->  {args.out}")
    return 0


def _add_evaluation_commands(sub: argparse._SubParsersAction, with_evaluations: bool, only: str | None) -> None:
    """`vito eval NAME` (one subcommand per registered evaluation, or only ``only`` when that names one) and
    `vito attention`."""
    evaluate = sub.add_parser("eval", help="evaluate an encoder", description="Evaluate any encoder under one harness; "
                              "each evaluation writes OUT/result.json and OUT/result.md.")
    evals = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    evaluate.set_defaults(handler=_cmd_eval)
    if with_evaluations:
        from vito.eval.core.running import add_evaluation_commands

        add_evaluation_commands(evals, only)
    attention = sub.add_parser("attention", help="attention pictures of a vito encoder for images or videos",
                               description="One PNG per input: the picture, each stage's attention and their mean.")
    if with_evaluations:
        from vito.eval.core.encoder_spec import add_encoder_arguments

        add_encoder_arguments(attention)
    attention.add_argument("--out", type=Path, required=True, help="output folder")
    attention.add_argument("inputs", nargs="+", help="image or video files")
    attention.add_argument("--image-size", type=int, default=224)
    attention.add_argument("--frames-per-video", type=int, default=4)
    attention.set_defaults(handler=_cmd_attention)


# --------------------------------------------------------------------------------------------------
# Curation and shards (helper F's section)


def _cmd_curate(args: argparse.Namespace) -> int:
    from vito.curate.pipeline import CurationSettings, curate_from_spec

    settings = CurationSettings(min_duration=args.min_duration, max_frames=args.max_frames,
                                class_cap=args.class_cap, batch_size=args.batch_size, image_size=args.image_size)
    _check_out_folder(args.out)
    summary = curate_from_spec(args.candidates, args.out, args.classifier, args.weights, settings,
                               random_init=args.random_init, rank=args.rank, world_size=args.world_size,
                               resume=args.resume, device=args.device)
    dry_run = f" [{summary['dry_run']}]" if summary and "dry_run" in summary else ""
    if summary is None:
        print(f"vito curate: this rank is done; the last rank to finish writes {args.out}/accepted.jsonl")
    else:
        print(f"vito curate: kept {summary['kept']} of {summary['candidates']} videos "
              f"({summary['classes_kept']} classes); reasons {summary['reasons']} -> {args.out}{dry_run}")
    return 0


def _check_out_folder(out: Path) -> None:
    """A VitoError unless ``out`` is a folder or can be made one: a file in its place (or in place of a folder
    above it) would be a FileExistsError / NotADirectoryError traceback once the long work starts."""
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise VitoError(f"--out {out}: {existing} is a file, not a folder")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from vito.data.shards.writer import ShardSettings, write_shards

    if args.workers < 0:
        raise VitoError(f"--workers must be at least 0, got {args.workers}")
    _check_out_folder(args.out)
    settings = ShardSettings(fps=args.fps, short_side=args.short_side, quality=args.quality,
                             max_seconds=args.max_seconds, shard_megabytes=args.shard_mb)
    index = write_shards(args.manifest, args.out, settings, workers=args.workers)
    print(f"vito prepare: {index['num_clips']} clips in {len(index['shards'])} shards -> {args.out} "
          f"({index['skipped']} unreadable skipped)")
    return 0


def _add_curation_commands(sub: argparse._SubParsersAction) -> None:
    """`vito curate` and `vito prepare`."""
    curate = sub.add_parser(
        "curate",
        help="VideoNet curation: keep candidate videos whose title and frames show an ImageNet class",
        description="Filters candidates (CSV/JSONL with path and title, optional id and duration; relative "
        "paths are resolved against the file's folder) in the paper's order: the title names an ImageNet "
        "class or synonym, a per-class cap, duration, and an ImageNet classifier that must predict the class "
        "top-1 on one of the first frames. Split the work with `torchrun --nproc-per-node K -m vito curate ...` "
        "or --rank/--world-size; rerunning the same command continues where it stopped. Guide: `vito docs curation`.",
    )
    curate.add_argument("--candidates", type=Path, required=True, help="CSV or JSONL file of candidate videos")
    curate.add_argument("--classifier", required=True, help=f"ImageNet classifier: {SPEC_HELP}")
    curate.add_argument("--weights", type=Path, default=None, help="local weights file of the classifier")
    curate.add_argument("--random-init", action="store_true",
                        help="no --weights: a seeded random classifier, for a dry run of the pipeline (every output "
                        "says so; see `vito docs curation`)")
    curate.add_argument("--out", type=Path, required=True, help="output folder (accepted.jsonl, rejected.jsonl, ...)")
    curate.add_argument("--resume", action="store_true", help="continue the run in --out (fails if there is none)")
    curate.add_argument("--min-duration", type=float, default=10.0, help="seconds (default 10, as in the paper)")
    curate.add_argument("--max-frames", type=int, default=100, help="first frames classified (default 100)")
    curate.add_argument("--class-cap", type=int, default=5000, help="videos retrieved per class (default 5000)")
    curate.add_argument("--batch-size", type=int, default=32, help="frames per classifier batch")
    curate.add_argument("--image-size", type=int, default=None, help="classifier crop (default: the model's)")
    curate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    curate.add_argument("--rank", type=int, default=None, help="this machine's share (default: $RANK or 0)")
    curate.add_argument("--world-size", type=int, default=None, help="number of shares (default: $WORLD_SIZE or 1)")
    curate.set_defaults(handler=_cmd_curate)

    prepare = sub.add_parser(
        "prepare",
        help="write curated videos or images as training shards (tar of JPEG frames, indexed for direct seeks)",
        description="Decodes each video of a manifest (e.g. OUT/accepted.jsonl of `vito curate`, or any CSV/JSONL "
        "with a path column) at a reduced frame rate and short side and stores the frames as JPEG in "
        "WebDataset-compatible tar shards with an index (shards.json); `vito pretrain --data SHARDS_DIR` "
        "trains from them. A manifest of images (.jpg, .png, .webp, ...) stores each image as one JPEG frame "
        "at the short side (--fps and --max-seconds do not apply); one naming videos and images is refused.",
    )
    prepare.add_argument("--manifest", type=Path, required=True,
                         help="accepted.jsonl or another CSV/JSONL manifest of videos or of images, or a folder "
                         "of either (searched recursively, e.g. ImageNet's train/)")
    prepare.add_argument("--out", type=Path, required=True, help="shard folder")
    prepare.add_argument("--fps", type=float, default=10.0, help="stored frames per second (default 10)")
    prepare.add_argument("--short-side", type=int, default=256, help="stored short side in pixels (default 256)")
    prepare.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    prepare.add_argument("--max-seconds", type=float, default=None, help="store at most this much of each video")
    prepare.add_argument("--shard-mb", type=float, default=512.0, help="target shard size in MB (default 512)")
    prepare.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in this process)")
    prepare.set_defaults(handler=_cmd_prepare)


# --------------------------------------------------------------------------------------------------
# The report: every evaluation of a suite for every encoder (vito report)


def _cmd_report(args: argparse.Namespace) -> int:
    from vito.engine.finetune import FinetuneStopped
    from vito.engine.signals import exit_status
    from vito.report.build import make_report
    from vito.report.runs import PretrainStopped

    if args.status:  # `vito report DIR --status` (or SUITE --out DIR --status): the jobs' states, nothing changed
        from vito.report.launch.status import print_status

        return print_status(args.out or args.suite)
    if args.out is None:
        raise VitoError("vito report: --out DIR is required (the report folder)")
    try:
        run = make_report(args.suite, args.out, only=args.only, dry_run=args.dry_run, break_lock=args.break_lock,
                          loggers=args.loggers, overwrite=args.overwrite, launcher=args.launcher,
                          launcher_settings=from_namespace(LauncherSettings, args))
    except (FinetuneStopped, PretrainStopped) as stopped:  # a stop signal during a fine-tune or a pretraining
        print(f"vito report: {stopped}", file=sys.stderr)  # run stops the report: the scheduler requeues it, and
        return exit_status(stopped.stopped_by)  # the rerun resumes that run
    return 1 if run.failed or run.plot_errors else 0


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    """`vito report SUITE --out DIR [--only NAME] [--dry-run]`."""
    report = sub.add_parser(
        "report",
        help="run a suite of evaluations for several encoders and write the paper's tables (HTML, markdown, JSON)",
        description="Runs every evaluation of the suite YAML (keys: encoders, evaluations, references, columns, "
        "plots, launcher) for every encoder, first training a study's pretraining rows (one run per seed under "
        "OUT/runs/), reusing each cell already computed for the same encoder and settings under OUT/cells/ "
        "(also cells written there beforehand by `vito eval NAME ... --out OUT/cells/ROW/NAME`), and writes "
        "OUT/index.html, OUT/report.md and OUT/results.json. A failing cell is marked and the others complete; "
        "the exit status is then 1. See `vito docs report`.",
    )
    report.add_argument("suite", type=Path, help="suite YAML file (with --status: the report folder)")
    report.add_argument("--out", type=Path, default=None, help="report folder (required, except with --status)")
    report.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this row (encoder or reference) or evaluation; repeatable: rows and evaluations "
                        "combine as 'and', names of one kind as 'or' (the linear head a cell needs comes along)")
    report.add_argument("--dry-run", action="store_true", help="list the cells that would be computed; write nothing")
    report.add_argument("--break-lock", action="store_true",
                        help="take a report folder locked by a report on another host (only when that one is gone)")
    report.add_argument("--overwrite", action="store_true",
                        help="train afresh a study's run folder that holds a run of another config or data "
                        "(deletes that run; without it such a folder stops the report)")
    report.add_argument("--loggers", nargs="+", choices=LOGGER_NAMES, default=None,
                        help="where the fine-tuning cells' metrics go besides metrics.jsonl (default: the suite's, "
                        "else tensorboard); wandb and mlflow need pip install 'vito[wandb]' / 'vito[mlflow]'")
    report.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: every pretraining run and cell in this process, one after another (default); "
                        "submitit: each run and each cell a submitit job (SLURM), its logs under OUT/jobs/; rerun to "
                        "collect and submit what is ready (a run's cells once the run finished) "
                        "(pip install 'vito[slurm]'; docs/cluster.md)")
    report.add_argument("--status", action="store_true",
                        help="list the submitted jobs (pretraining runs and cells: queued, running, done, failed) "
                        "with job ids and log files")
    add_arguments(report.add_argument_group("job resources (--launcher submitit; over the suite's launcher: block)"),
                  LauncherSettings)
    report.set_defaults(handler=_cmd_report)


# --------------------------------------------------------------------------------------------------
# The guides (vito docs): docs/*.md ship inside the package, so messages can point to them from any install

DOCS_DIR = Path(__file__).parent / "docs"


def doc_pages() -> dict[str, Path]:
    """The guides by name (``cluster`` for docs/cluster.md)."""
    return {path.stem: path for path in sorted(DOCS_DIR.glob("*.md"))}


def _cmd_docs(args: argparse.Namespace) -> int:
    pages = doc_pages()
    if args.page is None:
        for name, path in pages.items():
            title = next((line[2:].strip() for line in path.read_text().splitlines() if line.startswith("# ")), "")
            print(f"{name:14s} {title}")
        return 0
    if args.page not in pages:
        raise VitoError(f"no guide named {args.page!r}; the guides: {', '.join(pages)}")
    print(pages[args.page].read_text(), end="")
    return 0


def _add_docs_command(sub: argparse._SubParsersAction) -> None:
    """`vito docs [PAGE]`."""
    docs = sub.add_parser("docs", help="read a guide (the pages that messages point to), or list them",
                          description="Prints a guide of the docs/ folder, which ships with vito: `vito docs` lists "
                          "them, `vito docs cluster` prints docs/cluster.md (pipe it to a pager).")
    docs.add_argument("page", nargs="?", help="the guide's name, e.g. cluster, pretraining, metrics")
    docs.set_defaults(handler=_cmd_docs)


# --------------------------------------------------------------------------------------------------


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; the evaluation subcommands (which import the evaluation modules) are only
    built when ``argv`` may need them, so that ``vito --help`` and ``vito pretrain`` stay fast, and
    ``vito eval NAME ...`` builds NAME's alone (an unknown NAME builds them all, for argparse's list)."""
    parser = argparse.ArgumentParser(
        prog="vito",
        description="VITO: self-supervised video pretraining for general, robust, human-aligned image "
        "representations - pretraining, curation and evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_pretraining_commands(sub)
    with_evaluations = argv is None or bool(argv) and argv[0] in ("eval", "attention")
    only = argv[1] if argv and argv[0] == "eval" and len(argv) > 1 else None
    _add_evaluation_commands(sub, with_evaluations, only)
    _add_curation_commands(sub)
    _add_report_command(sub)
    _add_docs_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.handler(args)
    except (VitoError, FileNotFoundError) as error:
        end_bars()  # the error starts on a line of its own, not at the end of a progress bar
        print(f"vito {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or twice where the first one asked a training loop to stop after its step
        end_bars()
        print(f"vito {args.command}: interrupted: stopped at once (a run continues from its last checkpoint)",
              file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
