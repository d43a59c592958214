"""Command line: `fer-jax download | data check | train | evaluate | predict | export-weights | export-onnx | compare`
(also `python -m fer_jax`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fer_jax.commands import run_command
from fer_jax.config import Config, ConfigError, ProcessConfig, known_keys, quick, set_flags
from fer_jax.environment import use_project_xla_flags
from fer_jax.errors import DataError

EPILOG = """examples:
  fer-jax download --dest data                 # Kaggle msambare/fer2013 -> data/fer2013.zip
  fer-jax data check data/fer2013.zip          # counts, sharpness, blanks, duplicates, sample grids
  fer-jax train --quick                        # a one-minute smoke run on a subset
  fer-jax train --results results/seed_cnn.json   # the full recipe
  fer-jax train --resume runs/seed_cnn/20261127-120000
  fer-jax evaluate runs/seed_cnn/20261127-120000   # report into RUN_DIR/eval/
  fer-jax predict photo.jpg                    # faces, boxes and 7 probabilities; annotated image in predictions/
  fer-jax compare --quick --seeds 3            # JAX vs PyTorch, one run, same machine
  fer-jax train --distributed --coordinator-address 10.0.0.1:1234 --num-processes 2 --process-id 0
                                               # one of two processes of a run (docs/distributed.md)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-jax",
        description="Train and evaluate the FER-2013 seed CNN in JAX/Flax.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    download = commands.add_parser(
        "download",
        help="download FER-2013 from Kaggle (needs Kaggle API credentials)",
        description="Download the Kaggle dataset msambare/fer2013 to DEST/fer2013.zip. Credentials come from "
        "~/.kaggle/kaggle.json or the KAGGLE_USERNAME and KAGGLE_KEY environment variables.",
    )
    download.add_argument("--dest", default="data", help="folder for fer2013.zip (default: %(default)s)")
    download.add_argument("--force", action="store_true", help="download again even if the zip is there")

    data = commands.add_parser(
        "data",
        help="inspect a copy of FER-2013 (`fer-jax data check PATH`)",
        description="Tools for a copy of FER-2013.",
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    check = data_commands.add_parser(
        "check",
        help="per-split statistics, duplicates and warnings, with sample grids",
        description="Load PATH and report, per split: counts and class histogram, intensity mean and std, "
        "sharpness (median mean-absolute Laplacian), blank images, and exact duplicates; across splits, exact "
        "and near copies (Training -> test leakage). Warns when one split's sharpness or intensity is far from "
        "the others' (a blurred or re-scaled split). Writes OUT/data_check.json and OUT/samples_<split>.png. "
        "Training runs the same check on the data it loads and keeps the report in the run folder.",
    )
    check.add_argument("path", metavar="PATH", help="Kaggle zip, extracted folder or fer2013.csv")
    check.add_argument(
        "--out", default="data_check", help="folder for the report and sample grids (default: %(default)s)"
    )
    check.add_argument("--json", metavar="FILE", help="also write the report here (e.g. results/data_check.json)")
    check.add_argument("--strict", action="store_true", help="exit with status 1 when there are warnings")

    train = commands.add_parser(
        "train",
        help="train a model and evaluate its best checkpoint on PrivateTest",
        description="Train on Training, select the checkpoint on PublicTest (early stopping), report PrivateTest. "
        "The run folder gets config.json, metrics.jsonl, checkpoints/, curves.png, confusion_matrix.png, "
        "results.json and TensorBoard event files (tensorboard --logdir runs).",
        epilog="config keys for --set: " + ", ".join(known_keys()),
    )
    train.add_argument(
        "--data", help="Kaggle zip, extracted folder or fer2013.csv (default: $FER2013_ZIP, else data/fer2013.zip)"
    )
    train.add_argument("--config", type=Path, help="start from this config.json instead of the defaults")
    train.add_argument("--run-dir", help="where the run is written (default: runs/<model>/<timestamp>)")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint, with its saved config",
    )
    train.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs on 2,048 training images, PublicTest and PrivateTest cut to 512 each: a smoke "
        "test, not a result",
    )
    train.add_argument("--epochs", type=int, help="maximum epochs (config train.epochs)")
    train.add_argument("--batch-size", type=int, help="config train.batch_size")
    train.add_argument("--lr", type=float, help="learning rate (config optim.learning_rate)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], help="config optim.name")
    train.add_argument("--seed", type=int, help="config train.seed")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set train.patience=5 (repeatable)",
    )
    train.add_argument("--results", help="also write the results JSON here (e.g. results/seed_cnn.json)")
    train.add_argument(
        "--profile",
        type=int,
        metavar="STEPS",
        help="trace STEPS train steps after the first (which compiles) with jax.profiler into RUN_DIR/plugins/profile/ "
        "for TensorBoard's profile plugin (XProf) and Perfetto (config train.profile_steps; also with --resume)",
    )
    group = train.add_argument_group(
        "multi-process runs",
        "One run over the devices of several processes or hosts (jax.distributed; docs/distributed.md). Every "
        "process runs the same command but --process-id; process 0 writes the run folder, which all of them must "
        "see. Unset, the address, count and id come from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and "
        "$JAX_PROCESS_ID, else from JAX's detection of SLURM, Cloud TPU, Open MPI or Kubernetes.",
    )
    group.add_argument(
        "--distributed",
        action=argparse.BooleanOptionalAction,
        help="join a multi-process run (config train.distributed; with --resume, overrides the saved value)",
    )
    group.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's host and a free port")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes the run has")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0..N-1")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluation report of a run's best checkpoint on PrivateTest and PublicTest",
        description="Load RUN_DIR's config.json and best checkpoint and write RUN_DIR/eval/: report.json (accuracy, "
        "per-class precision/recall/F1, macro-F1, confusion matrix, most confident mistakes, and the same with "
        "test-time augmentation), confusion_<split>.png (counts and row-normalised) and mistakes_<split>.png.",
    )
    evaluate.add_argument("run_dir", help="a run folder written by `fer-jax train`")
    evaluate.add_argument("--data", help="dataset path, if not the one the run was trained on")
    evaluate.add_argument(
        "--crops",
        action="store_true",
        help="also report TTA over the four corner crops (10 views: 5x the time of flip TTA)",
    )

    predict = commands.add_parser(
        "predict",
        help="find the faces in images (or a video) and classify their expressions",
        description="Find faces (--detector), crop each to 48x48 grayscale (turned upright when the detector found it "
        "rotated) and classify them in batches of up to 256 across images and frames. Writes "
        "OUT/<name>_annotated.jpg per image, OUT/predictions.json and OUT/predictions.csv (box and all seven "
        "probabilities per face); with --video, OUT/<name>_annotated.mp4 and OUT/<name>_frames.csv.",
        epilog="weights: by default the CPU-best net (vgg_bn, width 3/8) shipped in fer_jax/weights/, reading each "
        "face and its mirror image; --model seed_cnn for the seed CNN, --model vgg_bn,seed_cnn for both, --tta none "
        "for one view. The classifier is compiled once per machine and kept in "
        "~/.cache/fer-jax/jax-compile/ (FER_JAX_COMPILE_CACHE=DIR moves it, =off turns it off)",
    )
    predict.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files (any format OpenCV reads), folders (their images, recursively) or glob "
        "patterns such as 'photos/**/*.jpg' (quoted, so that '**' recurses)",
    )
    weights = predict.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        help="exported weights (.msgpack, its .json beside) or a run folder "
        "(its best checkpoint); default: the shipped CPU-best net (vgg_bn)",
    )
    weights.add_argument(
        "--model",
        action="append",
        metavar="NET[,NET...]",
        help="the net to classify with: shipped vgg_bn (the default) or seed_cnn, exported weights (.msgpack) or a "
        "run folder; several nets (comma-separated, or --model repeated) are an ensemble, their probabilities "
        "averaged: --model vgg_bn,seed_cnn",
    )
    predict.add_argument(
        "--tta",
        choices=("none", "flip", "crops"),
        help="test-time views of each face, probabilities averaged: flip (the default: the face and its mirror, 2x "
        "the classifier's time), none (one view) or crops (those and 4 corner crops of each, 10x); "
        "docs/predict.md measures them",
    )
    predict.add_argument(
        "--crop",
        choices=("box", "layout"),
        help="box (default): the detector's box, turned upright; layout: RetinaFace's faces warped by their five "
        "landmarks onto FER-2013's own layout (docs/predict.md compares them)",
    )
    predict.add_argument("--out", default="predictions", help="output folder (default: %(default)s)")
    predict.add_argument(
        "--no-detect",
        action="store_true",
        help="no face detection: each image is one face (for already-cropped faces, e.g. FER-2013's)",
    )
    predict.add_argument("--video", help="a video file to process frame by frame")
    predict.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="with --video: classify every N-th frame (default: %(default)s)",
    )
    predict.add_argument(
        "--detector",
        default="retinaface",
        metavar="NAME",
        help="retinaface (default: a CNN, faces turned upright by their eyes), retinaface-sweep (also faces turned "
        "by 90 degrees and faces under 40 px, about 12x the CPU time), dlib or dlib-sweep (dlib's HOG detector), "
        "haar or haar-sweep (OpenCV's cascades); docs/predict.md compares them",
    )
    predict.add_argument(
        "--backend",
        default="jax",
        choices=("jax", "onnx"),
        help="run the classifier with JAX (default) or ONNX Runtime (pip install 'fer-jax[onnx]'; "
        "--checkpoint may then also be an .onnx file)",
    )

    export = commands.add_parser(
        "export-weights",
        help="write a run's best weights as a small float16 file (what `predict` ships)",
        description="Write RUN_DIR's best checkpoint as float16 weights OUT (.msgpack) and OUT's .json beside "
        "(model, source run, PrivateTest accuracy, sha256). To replace the weights `fer-jax predict` ships: "
        "--out fer_jax/weights/seed_cnn.msgpack",
    )
    export.add_argument("run_dir", help="a run folder written by `fer-jax train`")
    export.add_argument("--out", required=True, help="the .msgpack file to write")

    onnx = commands.add_parser(
        "export-onnx",
        help="write the seed CNN or a vgg_bn as an ONNX model (onnxruntime, `predict --backend onnx`)",
        description="Export through the PyTorch port (fer_jax.baseline.porting) with torch.onnx.export. The model "
        "takes 'faces', (N, 48, 48) uint8 grayscale crops, and gives 'logits', (N, 7) in fer_jax.EMOTIONS order. Only "
        "nets with a PyTorch port (seed_cnn, vgg_bn) export. Needs pip install 'fer-jax[onnx]'.",
    )
    onnx.add_argument(
        "source",
        nargs="?",
        metavar="RUN_DIR|WEIGHTS",
        help="a run folder (its best checkpoint) or exported weights (.msgpack); default: the shipped weights",
    )
    onnx.add_argument(
        "--model",
        metavar="NAME",
        help="the zoo net to export (seed_cnn or vgg_bn): its shipped weights, or what the source must hold",
    )
    onnx.add_argument("--out", required=True, help="the .onnx file to write")
    onnx.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 model instead (ONNX Runtime static quantization, its activation ranges calibrated on "
        "512 Training faces of --data): about 3x the float32 model's faces/s on a CPU with AVX-512 VNNI; speed and "
        "PrivateTest accuracy in docs/predict.md",
    )
    onnx.add_argument(
        "--data",
        help="with --int8: the archive whose Training faces calibrate it (default: $FER2013_ZIP, else "
        "data/fer2013.zip)",
    )

    demo = commands.add_parser(
        "demo",
        help="the model in a browser: photos, the webcam and short videos (Gradio; pip install 'fer-jax[demo]')",
        description="Serve a page (Gradio) that runs `fer-jax predict` on an uploaded or pasted photo, the webcam's "
        "frames as they stream, or a short video, with a choice of model and face detector. Serves on 127.0.0.1 "
        "only, unless --host says otherwise; no telemetry, no share link, nothing fetched from the network.",
    )
    demo.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 opens it to the network")
    demo.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="exported weights (.msgpack) or a run folder to offer beside the shipped nets (repeatable; the first "
        "is selected)",
    )
    demo.add_argument("--max-file-size", default="50mb", help="largest upload accepted (default: %(default)s)")

    commands.add_parser(
        "compare",
        add_help=False,
        help="train JAX and PyTorch on the same data, config and seeds; print and save the comparison "
        "(`fer-jax compare --help`)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config a `train` invocation asks for (a resumed run keeps its saved config)."""
    if args.resume:
        given = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--run-dir", args.run_dir),
                ("--quick", args.quick),
                ("--epochs", args.epochs),
                ("--batch-size", args.batch_size),
                ("--lr", args.lr),
                ("--optimizer", args.optimizer),
                ("--seed", args.seed),
                ("--set", args.set),
            )
            if value
        ]
        if given:
            raise ConfigError(f"--resume continues a run with its saved config; drop {', '.join(given)}")
        config_path = Path(args.resume) / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{args.resume}: no config.json; nothing to resume")
        config = Config.load(config_path)
        flags = {
            "--resume": ("run_dir", args.resume),
            "--data": ("data.source", args.data),
            "--profile": ("train.profile_steps", args.profile),
            "--distributed": ("train.distributed", args.distributed),
        }
        set_flags(config, flags)
        return config.validate()
    config = Config.load(args.config) if args.config else Config()
    if args.quick:
        quick(config)
    flags = {
        "--data": ("data.source", args.data),
        "--epochs": ("train.epochs", args.epochs),
        "--batch-size": ("train.batch_size", args.batch_size),
        "--lr": ("optim.learning_rate", args.lr),
        "--optimizer": ("optim.name", args.optimizer),
        "--seed": ("train.seed", args.seed),
        "--profile": ("train.profile_steps", args.profile),
        "--distributed": ("train.distributed", args.distributed),
        "--run-dir": ("run_dir", args.run_dir),
    }
    set_flags(config, flags)
    config.apply_overrides(args.set)
    if not args.run_dir and not args.config:
        config.run_dir = f"runs/{config.model.name}/{time.strftime('%Y%m%d-%H%M%S')}"
    return config.validate()


def main(argv: Sequence[str] | None = None) -> int:
    use_project_xla_flags()  # before the first JAX computation: XLA reads its flags once
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # its own parser, options and --help
        from fer_jax.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    code = run_command(f"fer-jax {args.command}", lambda: _dispatch(args))
    if args.command == "train":
        from fer_jax.train.distributed import exit_if_abandoned

        exit_if_abandoned(code)
    return code


def check_outputs(files: dict[str, str | None], folders: dict[str, str | None] | None = None) -> None:
    """Refuse, before any work, an output flag's path that cannot be written ({flag: path or None})."""
    from fer_jax.files import output_problem

    for paths, folder in ((files, False), (folders or {}, True)):
        for flag, path in paths.items():
            problem = path is not None and output_problem(path, folder)
            if problem:
                raise ConfigError(f"{flag} {path}: {problem}")


def _dispatch(args: argparse.Namespace) -> None:
    """Run one command, importing only what it needs: `predict` never loads torch or the trainer."""
    if args.command == "download":
        from fer_jax.data.download import download_fer2013

        path = download_fer2013(args.dest, force=args.force)
        print(f"FER-2013 is at {path}")
    elif args.command == "data":
        from fer_jax.data.check import run_data_check
        from fer_jax.files import write_json

        check_outputs({"--json": args.json}, {"--out": args.out})
        report = run_data_check(args.path, args.out)
        if args.json:
            write_json(args.json, report)
        print(f"Wrote {Path(args.out) / 'data_check.json'}" + (f" and {args.json}" if args.json else ""))
        if args.strict and report["warnings"]:
            raise SystemExit(1)
    elif args.command == "train":
        from fer_jax.train.trainer import train

        config = config_from_args(args)
        check_outputs({"--results": args.results}, {"--run-dir": config.run_dir})
        launch = ProcessConfig(
            args.coordinator_address or "",
            args.num_processes or 0,
            -1 if args.process_id is None else args.process_id,
        )
        if launch != ProcessConfig() and not config.train.distributed:
            raise ConfigError("--coordinator-address, --num-processes and --process-id need --distributed")
        results = train(config, resume=bool(args.resume), results_copy=args.results, launch=launch)
        print(f"Run folder: {config.run_dir}  (PrivateTest accuracy {results['test_accuracy']:.4f})")
    elif args.command == "evaluate":
        from fer_jax.eval.report import evaluate_report

        evaluate_report(args.run_dir, args.data, crops=args.crops)
    elif args.command == "predict":
        from fer_jax.data.views import DEFAULT_TTA
        from fer_jax.infer.compile_cache import use_compile_cache
        from fer_jax.infer.onnx_export import load_backend
        from fer_jax.infer.predict import ensemble, predict_files, predict_video, weights_source

        use_compile_cache()

        if not args.paths and not args.video:
            raise DataError("nothing to do: give image PATHs and/or --video FILE")
        if args.every < 1:
            raise ConfigError(f"--every {args.every}: expected an integer >= 1 (classify every N-th frame)")
        check_outputs({}, {"--out": args.out})
        nets = [net for given in args.model or () for net in given.split(",") if net]
        sources = [weights_source(net) for net in nets] if nets else [args.checkpoint]
        classifier = ensemble([load_backend(source, args.backend) for source in sources], args.tta or DEFAULT_TTA)
        crop_options = {"warp": args.crop == "layout"} if args.crop else {}  # default: the detector module's
        failed = []
        if args.paths:
            records = predict_files(args.paths, args.out, classifier, not args.no_detect, args.detector, **crop_options)
            failed = [record["file"] for record in records if "error" in record]
        if args.video:
            predict_video(
                args.video,
                args.out,
                classifier,
                detect=not args.no_detect,
                every=args.every,
                detector=args.detector,
                **crop_options,
            )
        if failed:
            raise DataError(f"{len(failed)} of {len(records)} images could not be read: {', '.join(failed)}")
    elif args.command == "demo":
        from fer_jax.demo import serve

        serve(args.host, args.port, args.checkpoint, args.max_file_size)
    elif args.command == "export-onnx":
        from fer_jax.infer.onnx_export import calibration_faces, export_onnx

        check_outputs({"--out": args.out})
        faces = None
        if args.int8:
            from fer_jax.config import DataConfig
            from fer_jax.data.fer2013 import load_fer2013

            faces = calibration_faces(
                load_fer2013(args.data or DataConfig().resolved_source()).splits["Training"].images
            )
        elif args.data:
            raise DataError("--data calibrates an int8 model: it needs --int8")
        info = export_onnx(args.out, args.source, args.model, faces)
        kind = "int8, " if args.int8 else ""
        print(f"Wrote {args.out} ({kind}{info['model']}; input faces (N, 48, 48) uint8, output logits (N, 7))")
    elif args.command == "export-weights":
        from fer_jax.infer.predict import export_weights

        check_outputs({"--out": args.out, "--out's description": str(Path(args.out).with_suffix(".json"))})
        info = export_weights(args.run_dir, args.out)
        print(
            f"Wrote {args.out} ({info['parameters']:,} parameters, {info['dtype']}, sha256 {info['sha256'][:16]}...) "
            f"and {Path(args.out).with_suffix('.json')}"
        )
