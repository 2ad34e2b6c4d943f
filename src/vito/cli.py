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


def _add_encoder_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--encoder", required=required, help=ENCODER_HELP)
    parser.add_argument("--weights", type=Path, default=None, help="local weights file for a timm:/torchvision: encoder")
    parser.add_argument("--random-init", action="store_true",
                        help="evaluate a timm:/torchvision: encoder at its (seeded) random initialisation, no --weights")


# --------------------------------------------------------------------------------------------------
# Pretraining (issue: pretraining foundation)

DEFAULT_PRETRAIN_CONFIG = "vito_r50"


def _cmd_demo(args: argparse.Namespace) -> int:
    from vito.demo import run_demo

    run_demo(out_dir=args.out, max_steps=args.max_steps, overrides=args.overrides)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from vito.config import load_config
    from vito.train.loop import pretrain
    from vito.train.signals import exit_status

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.resume is not None:
        from vito.train.checkpoint import resume_config, resume_target

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
        "`torchrun --nproc-per-node K -m vito pretrain ...`. SIGTERM, SIGINT or SIGUSR1 finish the current "
        "step, write a checkpoint and exit with status 128 + the signal number (SIGUSR1: 143, like SIGTERM); "
        "see docs/cluster.md.",
    )
    pretrain.add_argument("--config", default=None,
                          help="YAML file or preset name (vito_r50, moclr_r50, demo); default "
                          f"{DEFAULT_PRETRAIN_CONFIG} for a new run, the run's own config.yaml on --resume (a --config given then must match it)")
    pretrain.add_argument("--data", type=Path, default=None,
                          help="video folder, manifest file, or shard folder (on --resume: the run's own)")
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


def _load_encoder_arg(args: argparse.Namespace):
    """The --encoder; an outside architecture without --weights only with an explicit --random-init."""
    from vito.errors import VitoError
    from vito.eval.encoders import load_encoder, pick_device

    outside = args.encoder.startswith(("timm:", "torchvision:"))
    if args.random_init and (not outside or args.weights is not None):
        raise VitoError("--random-init is for a timm:NAME / torchvision:NAME encoder given without --weights")
    if outside and args.weights is None and not args.random_init:
        raise VitoError(f"{args.encoder} needs --weights FILE (or --random-init for a randomly initialised baseline)")
    return load_encoder(args.encoder, weights=args.weights, device=pick_device(args.device))


def _cmd_eval_knn(args: argparse.Namespace) -> int:
    from vito.eval.probes import run_knn

    report = run_knn(_load_encoder_arg(args), args.train, args.val, args.out, k=args.k, temperature=args.temperature,
                     image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers,
                     cache_dir=args.cache_dir)
    print(f"kNN top-1 {100 * report['top1']:.2f} %  ->  {args.out}/knn.json")
    return 0


def _cmd_eval_linear(args: argparse.Namespace) -> int:
    from vito.eval.probes import LinearProbeSettings, run_linear

    settings = LinearProbeSettings(lrs=tuple(args.lrs), epochs=args.epochs, batch_size=args.probe_batch_size,
                                   holdout_fraction=args.holdout_fraction)
    report = run_linear(_load_encoder_arg(args), args.train, args.val, args.out, settings, image_size=args.image_size,
                        batch_size=args.batch_size, num_workers=args.num_workers, cache_dir=args.cache_dir)
    print(f"linear probe top-1 {100 * report['top1']:.2f} % (base lr {report['best_lr']})  ->  {args.out}/linear.json")
    return 0


def _cmd_eval_davis(args: argparse.Namespace) -> int:
    from vito.eval.davis import PropagationSettings, propagate_davis, score_davis

    sequences = args.sequences.split(",") if args.sequences else None
    if args.results is not None:
        report = score_davis(args.davis_root, args.results, args.out, sequences, args.resolution, args.layout)
    elif args.encoder is None:
        raise SystemExit("vito eval davis: give --encoder ENC (propagate and score) or --results DIR (score only)")
    else:
        settings = PropagationSettings(stage=args.stage, stride8=not args.keep_stride, context=args.context,
                                       topk=args.topk, temperature=args.temperature,
                                       radius=None if args.radius <= 0 else args.radius,
                                       short_side=args.short_side or None, max_frames=args.max_frames)
        report = propagate_davis(_load_encoder_arg(args), args.davis_root, args.out, settings, sequences,
                                 args.resolution, args.layout)
    print(f"DAVIS J&F-Mean {report['global']['J&F-Mean']:.3f}  ->  {args.out}/davis.json")
    return 0


def _cmd_eval_ucf101(args: argparse.Namespace) -> int:
    from vito.eval.encoders import pick_device
    from vito.eval.ucf101 import ClipSettings, FinetuneSettings, run_ucf101

    settings = FinetuneSettings(mode=args.mode, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                num_workers=args.num_workers, max_videos=args.max_videos)
    clips = ClipSettings(image_size=args.image_size, test_clips=args.test_clips)
    report = run_ucf101(_load_encoder_arg(args), args.root, args.splits, args.split, args.pooling, args.out,
                        settings, clips, device=pick_device(args.device))
    print(f"UCF-101 split {args.split} top-1 {100 * report['top1']:.2f} %  ->  {args.out}/ucf101.json")
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from vito.eval.attention_cli import save_attention_pictures

    report = save_attention_pictures(_load_encoder_arg(args), args.inputs, args.out, args.image_size,
                                     args.frames_per_video)
    print(f"{len(report['pictures'])} attention pictures  ->  {args.out}")
    return 0


def _add_common_eval_args(parser: argparse.ArgumentParser, encoder_required: bool = True) -> None:
    _add_encoder_args(parser, required=encoder_required)
    parser.add_argument("--out", type=Path, required=True, help="output folder (JSON results + a short summary)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")


def _add_probe_args(parser: argparse.ArgumentParser) -> None:
    _add_common_eval_args(parser)
    parser.add_argument("--train", type=Path, required=True, help="ImageFolder of training images (root/<class>/<img>)")
    parser.add_argument("--val", type=Path, required=True, help="ImageFolder of validation images, same classes")
    parser.add_argument("--image-size", type=int, default=224, help="side after the 224/256 centre crop")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=4, help="image-decoding worker processes")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: OUT/features)")


def _add_probe_video_commands(evals: argparse._SubParsersAction, sub: argparse._SubParsersAction) -> None:
    """`vito eval knn|linear|davis|ucf101` and `vito attention`."""
    knn = evals.add_parser("knn", help="weighted kNN classification on frozen features (DINO protocol)")
    _add_probe_args(knn)
    knn.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    knn.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(sim / T) (default 0.07)")
    knn.set_defaults(handler=_cmd_eval_knn)

    linear = evals.add_parser("linear", help="linear probe on frozen features with a learning-rate sweep",
                              description="SGD with Nesterov momentum 0.9, no weight decay, cosine decay; the base "
                              "lr is swept and the best head (on validation, or on a held-out part of train) is "
                              "saved as OUT/linear_head.pt for --classifier options of other evaluations.")
    _add_probe_args(linear)
    linear.add_argument("--lrs", type=float, nargs="+", default=[0.4, 0.3, 0.2, 0.1, 0.05], help="base lrs (batch 256)")
    linear.add_argument("--epochs", type=int, default=80)
    linear.add_argument("--probe-batch-size", type=int, default=1024, help="batch size of the probe's SGD")
    linear.add_argument("--holdout-fraction", type=float, default=0.0,
                        help="choose the lr on this fraction of train instead of on --val (BYOL: 10k images)")
    linear.set_defaults(handler=_cmd_eval_linear)

    davis = evals.add_parser("davis", help="DAVIS video object segmentation by label propagation, scored with J&F",
                             description="With --encoder: propagate the first-frame masks (VFS settings: res4 at "
                             "stride 8, first + 20 preceding frames, top-10, T=0.07, radius 18) and score them. "
                             "With --results: only score a results folder, like the official evaluation script.")
    _add_common_eval_args(davis, encoder_required=False)
    davis.add_argument("--davis-root", type=Path, required=True, help="folder with JPEGImages/ and Annotations/")
    davis.add_argument("--results", type=Path, default=None, help="score this results folder (RESULTS/<seq>/<frame>.png)")
    davis.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all annotated)")
    davis.add_argument("--resolution", default="480p")
    davis.add_argument("--layout", choices=["auto", "2016", "2017"], default="auto",
                       help="2016: grey 0/255 single-object masks; 2017: palette ids with 255 = void")
    davis.add_argument("--stage", type=int, default=-2, help="feature stage (default -2 = res4)")
    davis.add_argument("--keep-stride", action="store_true", help="do not remove that stage's stride")
    davis.add_argument("--context", type=int, default=20, help="preceding frames used as context")
    davis.add_argument("--topk", type=int, default=10)
    davis.add_argument("--temperature", type=float, default=0.07)
    davis.add_argument("--radius", type=float, default=18.0, help="spatial radius in feature cells (0: none)")
    davis.add_argument("--short-side", type=int, default=480, help="resize frames to this short side (0: native)")
    davis.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each sequence")
    davis.set_defaults(handler=_cmd_eval_davis)

    ucf = evals.add_parser("ucf101", help="UCF-101 action recognition: fine-tune (or frozen) with temporal pooling")
    _add_common_eval_args(ucf)
    ucf.add_argument("--root", type=Path, required=True, help="UCF-101 videos (root/<Class>/v_*.avi)")
    ucf.add_argument("--splits", type=Path, required=True, help="folder with classInd.txt, trainlist0N.txt, testlist0N.txt")
    ucf.add_argument("--split", type=int, choices=[1, 2, 3], default=1)
    ucf.add_argument("--pooling", choices=["avg", "ms-avg", "ms-attn"], default="avg")
    ucf.add_argument("--mode", choices=["finetune", "frozen"], default="finetune")
    ucf.add_argument("--epochs", type=int, default=16)
    ucf.add_argument("--lr", type=float, default=1e-4)
    ucf.add_argument("--batch-size", type=int, default=8, help="clips per step")
    ucf.add_argument("--num-workers", type=int, default=4)
    ucf.add_argument("--image-size", type=int, default=224)
    ucf.add_argument("--test-clips", type=int, default=10)
    ucf.add_argument("--max-videos", type=int, default=None, help="only the first N videos of each list (quick runs)")
    ucf.set_defaults(handler=_cmd_eval_ucf101)

    attention = sub.add_parser("attention", help="attention pictures of a vito encoder for images or videos",
                               description="One PNG per input: the picture, each stage's attention and their mean.")
    _add_common_eval_args(attention)
    attention.add_argument("inputs", nargs="+", help="image or video files")
    attention.add_argument("--image-size", type=int, default=224)
    attention.add_argument("--frames-per-video", type=int, default=4)
    attention.set_defaults(handler=_cmd_attention)


# --------------------------------------------------------------------------------------------------
# Human alignment and robustness (helper E's section)


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, default=224, help="evaluation resolution (default 224)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _inference_kwargs(args: argparse.Namespace) -> dict:
    return {"image_size": args.image_size, "batch_size": args.batch_size, "device": args.device}


def _cmd_model_vs_human(args: argparse.Namespace) -> int:
    from vito.eval.human import evaluate_model_vs_human

    result = evaluate_model_vs_human(
        args.out, args.raw_data, responses=args.responses, encoder=args.encoder, weights=args.weights,
        classifier=args.classifier, stimuli=args.stimuli, humans=args.humans, compare=args.compare,
        **_inference_kwargs(args),
    )
    if result is None:
        print(f"consistency table of {len(args.compare)} results -> {args.out}")
        return 0
    overall = result["overall"]
    print(f"error consistency {overall['error_consistency']:.3f}, observed consistency "
          f"{overall['observed_consistency']:.3f}, accuracy difference {overall['accuracy_difference']:.3f} -> {args.out}")
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from vito.eval.robustness import plot_3dcc, run_robustness, summary

    if args.evaluation == "imagenet-3dcc" and args.encoder is None:
        if not args.compare:
            raise SystemExit("vito eval imagenet-3dcc: give --encoder ENC, or --compare RESULTS... to plot only")
        print(plot_3dcc(args.compare, args.out / "imagenet_3dcc_delta.png"))
        return 0
    if args.encoder is None or args.root is None:
        raise SystemExit(f"vito eval {args.evaluation}: --encoder and --root are required")
    extra = {}
    if args.evaluation == "imagenet-3dcc":
        extra = {"clean": args.clean_accuracy if args.clean_accuracy is not None else args.clean, "compare": args.compare}
    result = run_robustness(args.evaluation, args.out, args.root, args.encoder, args.weights, args.classifier,
                            **extra, **_inference_kwargs(args))
    print(f"{summary(result)} -> {args.out}")
    return 0


def _cmd_clickme(args: argparse.Namespace) -> int:
    from vito.eval.saliency import compare_clickme, run_clickme, summary

    if args.encoder is None:
        if not args.compare:
            raise SystemExit("vito eval clickme: give --encoder ENC, or --compare RUN_DIRS... to draw overlays only")
        print(compare_clickme(args.compare, args.out / "clickme_overlays.png"))
        return 0
    if args.root is None:
        raise SystemExit("vito eval clickme: --root DIR (ClickMe .npz files) is required")
    result = run_clickme(args.out, args.root, args.encoder, args.weights, args.classifier, method=args.saliency,
                         compare=args.compare, **_inference_kwargs(args))
    print(f"{summary(result)} -> {args.out}")
    return 0


def _add_alignment_commands(evals: argparse._SubParsersAction) -> None:
    """`vito eval model-vs-human|imagenet-a|imagenet-vid-robust|imagenet-3dcc|clickme`."""
    head_help = "linear ImageNet head from `vito eval linear`, or `own` (the encoder's own classifier)"

    mvh = evals.add_parser(
        "model-vs-human",
        help="accuracy difference, observed and error consistency with human observers",
        description="Classify model-vs-human stimuli into 16 categories and compare trial by trial with every "
        "human subject; or score an existing responses CSV (--responses) without a model.",
    )
    mvh.add_argument("--encoder", default=None, help=ENCODER_HELP)
    mvh.add_argument("--weights", type=Path, default=None, help="local weights file for a timm:/torchvision: encoder")
    mvh.add_argument("--classifier", default="own", help=head_help)
    mvh.add_argument("--stimuli", type=Path, default=None, help="stimulus images (searched recursively)")
    mvh.add_argument("--responses", type=Path, default=None,
                     help="score this responses CSV instead of a model (a human subject's own CSV is scored "
                     "against the other subjects only)")
    mvh.add_argument("--humans", action="store_true",
                     help="score every human subject against the others (leave one out) instead of a model")
    mvh.add_argument("--raw-data", type=Path, default=None, help="human raw-data root or one dataset's folder")
    mvh.add_argument("--out", type=Path, required=True, help="output folder")
    mvh.add_argument("--compare", type=Path, nargs="*", default=[],
                     help="earlier model_vs_human.json files (or folders) to put in the same table")
    _add_inference_args(mvh)
    mvh.set_defaults(handler=_cmd_model_vs_human)

    roots = {
        "imagenet-a": "ImageNet-A release folder (imagenet-a/<wnid>/*.jpg)",
        "imagenet-vid-robust": "ImageNet-Vid-Robust folder (metadata/*.json and the frames named in it)",
        "imagenet-3dcc": "ImageNet-3DCC folder (<corruption>/<severity>/<wnid>/*.JPEG)",
    }
    for name, root_help in roots.items():
        command = evals.add_parser(name, help=f"top-1 robustness on {name}", description=f"Evaluate on {root_help}.")
        command.add_argument("--encoder", default=None, help=ENCODER_HELP)
        command.add_argument("--weights", type=Path, default=None, help="local weights for a timm:/torchvision: encoder")
        command.add_argument("--classifier", default="own", help=head_help)
        command.add_argument("--root", type=Path, required=name != "imagenet-3dcc", help=root_help)
        command.add_argument("--out", type=Path, required=True, help="output folder")
        if name == "imagenet-3dcc":
            command.add_argument("--clean", type=Path, default=None, help="ImageNet val folder (<wnid>/*.JPEG)")
            command.add_argument("--clean-accuracy", type=float, default=None, help="clean top-1 as a fraction")
            command.add_argument("--compare", type=Path, nargs="*", default=[],
                                 help="earlier imagenet_3dcc.json files (or folders) to draw on the same plot")
        _add_inference_args(command)
        command.set_defaults(handler=_cmd_robustness)

    clickme = evals.add_parser(
        "clickme",
        help="alignment of saliency with ClickMe human maps (normalised Spearman)",
        description="VITO encoders use their attention maps; others gradient saliency of a classifier. "
        "See docs/clickme.md for the expected data layout.",
    )
    clickme.add_argument("--encoder", default=None, help=ENCODER_HELP)
    clickme.add_argument("--weights", type=Path, default=None, help="local weights for a timm:/torchvision: encoder")
    clickme.add_argument("--classifier", default=None, help=head_help + " (needed for gradient saliency)")
    clickme.add_argument("--saliency", choices=["auto", "attention", "gradient"], default="auto")
    clickme.add_argument("--root", type=Path, default=None, help="folder of ClickMe .npz files")
    clickme.add_argument("--out", type=Path, required=True, help="output folder")
    clickme.add_argument("--compare", type=Path, nargs="*", default=[], help="earlier clickme output folders to draw beside")
    _add_inference_args(clickme)
    clickme.set_defaults(handler=_cmd_clickme)


# --------------------------------------------------------------------------------------------------
# Curation and shards (helper F's section)


def _cmd_curate(args: argparse.Namespace) -> int:
    from vito.curate.pipeline import CurationSettings, curate_from_spec

    settings = CurationSettings(min_duration=args.min_duration, max_frames=args.max_frames,
                                class_cap=args.class_cap, batch_size=args.batch_size, image_size=args.image_size)
    summary = curate_from_spec(args.candidates, args.out, args.classifier, args.weights, settings,
                               rank=args.rank, world_size=args.world_size, resume=args.resume, device=args.device)
    if summary is None:
        print(f"vito curate: this rank is done; the last rank to finish writes {args.out}/accepted.jsonl")
    else:
        print(f"vito curate: kept {summary['kept']} of {summary['candidates']} videos "
              f"({summary['classes_kept']} classes); reasons {summary['reasons']} -> {args.out}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from vito.data.shards import ShardSettings, write_shards

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
        "or --rank/--world-size; rerunning the same command continues where it stopped.",
    )
    curate.add_argument("--candidates", type=Path, required=True, help="CSV or JSONL file of candidate videos")
    curate.add_argument("--classifier", required=True, help=f"ImageNet classifier: {SPEC_HELP}")
    curate.add_argument("--weights", type=Path, default=None, help="local weights file of the classifier")
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
        help="write curated videos as training shards (tar of JPEG frames, indexed for direct seeks)",
        description="Decodes each video of a manifest (e.g. OUT/accepted.jsonl of `vito curate`, or any CSV/JSONL "
        "with a path column) at a reduced frame rate and short side and stores the frames as JPEG in "
        "WebDataset-compatible tar shards with an index (shards.json); `vito pretrain --data SHARDS_DIR` "
        "trains from them.",
    )
    prepare.add_argument("--manifest", type=Path, required=True, help="accepted.jsonl or another CSV/JSONL manifest")
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
    from vito.report.build import make_report

    run = make_report(args.suite, args.out, only=args.only, dry_run=args.dry_run)
    return 1 if run.failed else 0


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    """`vito report SUITE --out DIR [--only NAME] [--dry-run]`."""
    report = sub.add_parser(
        "report",
        help="run a suite of evaluations for several encoders and write the paper's tables (HTML, markdown, JSON)",
        description="Runs every evaluation of the suite YAML (keys: encoders, evaluations, references) for every "
        "encoder, reusing each cell already computed for the same encoder and settings under OUT/cells/ "
        "(also cells written there beforehand by `vito eval NAME ... --out OUT/cells/ROW/NAME`), and writes "
        "OUT/index.html, OUT/report.md and OUT/results.json. A failing cell is marked and the others complete; "
        "the exit status is then 1. See docs/report.md.",
    )
    report.add_argument("suite", type=Path, help="suite YAML file")
    report.add_argument("--out", type=Path, required=True, help="report folder")
    report.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this row (encoder or reference) or evaluation; repeatable: rows and evaluations "
                        "combine as 'and', names of one kind as 'or' (the linear head a cell needs comes along)")
    report.add_argument("--dry-run", action="store_true", help="list the cells that would be computed; write nothing")
    report.set_defaults(handler=_cmd_report)


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
    _add_report_command(sub)
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
