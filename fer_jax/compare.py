"""JAX/Flax against the PyTorch baseline: the same network, config, data and seeds, in one process.

Run `fer-jax compare --help` (or `python -m experiments.compare_frameworks --help`) for what it measures.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import torch

from fer_jax.baseline.evaluation import evaluate_torch, torch_device, torch_device_description
from fer_jax.baseline.models import TorchSeedCNN
from fer_jax.baseline.porting import flax_to_torch
from fer_jax.baseline.trainer import train_torch
from fer_jax.commands import run_command
from fer_jax.config import Config, ConfigError, known_keys, quick, set_flags
from fer_jax.data.cache import source_sha256
from fer_jax.data.fer2013 import Split
from fer_jax.environment import device_description, environment_info
from fer_jax.files import read_jsonl, write_json
from fer_jax.train.eval_step import build_eval_step
from fer_jax.train.evaluation import evaluate_split, load_splits
from fer_jax.train.plotting import plt, save_figure
from fer_jax.train.restore import restore_weights
from fer_jax.train.state import initial_model
from fer_jax.train.trainer import train

FRAMEWORKS = ("jax", "pytorch")
INITS = ("shared", "own")
MAX_SEEDS = 100
"""Most seeds one comparison trains (each seed trains both frameworks)."""
"""`--init`: PyTorch starts from JAX's initial weights ('shared') or from its own initialisation ('own')."""

METRICS: dict[str, tuple[str, float, str, str]] = {
    # key: (table label, unit divisor, number format, name of the JAX/PyTorch ratio)
    "final_val_accuracy": ("final PublicTest accuracy", 1, ".4f", "final_val_accuracy_ratio_jax_over_torch"),
    "best_val_accuracy": ("best PublicTest accuracy", 1, ".4f", "best_val_accuracy_ratio_jax_over_torch"),
    "test_accuracy": ("PrivateTest acc. (best ckpt)", 1, ".4f", "test_accuracy_ratio_jax_over_torch"),
    "seconds_per_epoch": ("s/epoch after the first", 1, ".2f", "seconds_per_epoch_ratio_jax_over_torch"),
    "first_epoch_seconds": ("first epoch s (compile)", 1, ".2f", "first_epoch_seconds_ratio_jax_over_torch"),
    "train_images_per_s": ("train images/s", 1, ".0f", "train_throughput_ratio_jax_over_torch"),
    "eval_images_per_s": ("eval images/s", 1, ".0f", "eval_throughput_ratio_jax_over_torch"),
    "peak_memory_bytes": ("peak memory MiB", 2**20, ".0f", "peak_memory_ratio_jax_over_torch"),
}

DESCRIPTION = """\
Train the seed CNN with the JAX trainer (fer_jax.train.trainer.train) and with the
PyTorch baseline (fer_jax.baseline.trainer.train_torch), one after the other in
this one process, with the same config, data batches and seeds, and (by
default, --init shared) from the same initial weights: JAX's, ported to
PyTorch. Each run writes its own folder under runs/compare/<timestamp>/seed<k>/<framework>,
TensorBoard event files included: `tensorboard --logdir runs/compare/<timestamp>`
overlays the JAX and PyTorch curves of each seed (runs seed<k>/jax, seed<k>/pytorch).

Per framework (mean and std over seeds): final and best PublicTest accuracy;
PrivateTest accuracy of the best-on-PublicTest checkpoint; seconds per epoch
after the first, and the first epoch's seconds on their own (JAX compiles
then); training images/s from those epoch times (an epoch's time includes
its PublicTest pass); evaluation images/s (one timed pass over PublicTest
with the best checkpoint, after an untimed warm-up pass); peak memory (on a
GPU, the framework's allocator peak; on the CPU, the peak resident memory of
the whole process during the run). JAX/PyTorch ratios of each.

Writes the JSON (--out), a PNG beside it (accuracy curves and throughput
bars) and prints a table."""

EPILOG = """\
examples:
  fer-jax compare --quick --seeds 1     # a few minutes on a laptop CPU
  fer-jax compare --epochs 20 --seeds 3 --out results/compare_cpu.json

config keys for --set: """ + ", ".join(known_keys())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-jax compare",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs per run (config train.epochs)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        metavar="N",
        help="train with seeds train.seed .. train.seed+N-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs on 2,048 training and 512 PublicTest/PrivateTest images: a smoke test",
    )
    parser.add_argument(
        "--data", help="Kaggle zip, extracted folder or fer2013.csv (default: $FER2013_ZIP, else data/fer2013.zip)"
    )
    parser.add_argument(
        "--out", type=Path, help="results JSON (default: results/compare_<device>.json); the PNG goes beside it"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set optim.name=sgd (repeatable)",
    )
    parser.add_argument(
        "--init",
        choices=INITS,
        default="shared",
        help="shared: PyTorch starts from JAX's initial weights of the same seed, ported, so the two runs differ "
        "only in numerics and random streams (dropout, augmentation); own: each framework's default "
        "initialisation (default: %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The shared config of every run: defaults, then --quick, --epochs, --data and --set in that order."""
    config = Config()
    if args.quick:
        quick(config)
    set_flags(config, {"--epochs": ("train.epochs", args.epochs), "--data": ("data.source", args.data)})
    config.apply_overrides(args.set)
    if not 1 <= args.seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {args.seeds}: expected an integer from 1 to {MAX_SEEDS}")
    return config.validate()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before JAX starts its backend (at first use, not at import): JAX would otherwise take
    # 75% of GPU memory up front and leave little to PyTorch in this same process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    def run() -> None:
        config = config_from_args(args)
        out = args.out or Path(f"results/compare_{device_slug()}.json")
        argv_used = list(argv) if argv is not None else sys.argv[1:]
        compare(config, args.seeds, out, quick_run=args.quick, argv=argv_used, init=args.init)

    return run_command("fer-jax compare", run)


def device_slug() -> str:
    """'cpu', or the accelerator's kind in lower-case words joined by '-' (e.g. 'nvidia-h100-80gb-hbm3')."""
    device = jax.devices()[0]
    name = "cpu" if device.platform == "cpu" else device.device_kind
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def compare(
    config: Config, seeds: int, out: Path, quick_run: bool, argv: list[str], init: str = "shared"
) -> dict[str, Any]:
    """Train both frameworks for each seed, then write the JSON and the PNG and print the table.

    `init`: 'shared' starts PyTorch from the JAX model's initial weights of each seed; 'own' lets each
    framework initialise itself."""
    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}: expected one of {', '.join(INITS)}")
    run_root = Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S")
    splits = load_splits(config)
    seed_list = [config.train.seed + k for k in range(seeds)]
    runs: dict[str, list[dict[str, Any]]] = {framework: [] for framework in FRAMEWORKS}
    memory_measures: dict[str, str] = {}
    for seed in seed_list:
        for framework in FRAMEWORKS:
            run_config = copy.deepcopy(config)
            run_config.train.seed = seed
            run_config.run_dir = str(run_root / f"seed{seed}" / framework)
            memory_measures[framework] = reset_peak_memory(framework)
            runs[framework].append(run_once(framework, run_config, splits["PublicTest"], shared_init=init == "shared"))

    summaries = {framework: summarize(runs[framework]) for framework in FRAMEWORKS}
    report = {
        **machine_fields(),
        "command": shlex.join(sys.argv),
        "dataset_sha256": source_sha256(config.data.resolved_source()),
        "argv": argv,
        "settings": {
            "quick": quick_run,
            "init": init,
            "epochs": config.train.epochs,
            "seeds": seed_list,
            "batch_size": config.train.batch_size,
            "train_limit": config.data.train_limit,
            "eval_limit": config.data.eval_limit,
            "train_images": len(splits["Training"]),
            "val_images": len(splits["PublicTest"]),
            "test_images": len(splits["PrivateTest"]),
            "data": config.data.resolved_source(),
        },
        "config": config.to_dict(),
        "run_root": str(run_root),
        "notes": {
            "seconds_per_epoch": "mean wall time of epochs 2.. (epoch 1, with JAX's compilation, is "
            "first_epoch_seconds); an epoch includes its PublicTest evaluation",
            "train_images_per_s": "images trained per epoch / seconds_per_epoch (needs 2 or more epochs)",
            "eval_images_per_s": "PublicTest images / seconds of one pass with the best checkpoint, "
            "after an untimed warm-up pass",
            "peak_memory_bytes": memory_measures,
        },
        "frameworks": {
            framework: {"summary": summaries[framework], "runs": runs[framework]} for framework in FRAMEWORKS
        },
        "ratios": ratios(summaries["jax"], summaries["pytorch"]),
    }
    write_json(out, report)
    plot_comparison(report, out.with_suffix(".png"))
    print(format_table(report))
    print(f"Wrote {out} and {out.with_suffix('.png')}; curves of both frameworks: tensorboard --logdir {run_root}")
    return report


def machine_fields() -> dict[str, Any]:
    """Where a JAX-vs-PyTorch measurement ran: both frameworks' devices, versions, Python, platform, commit."""
    env = environment_info()
    return {
        "machine": device_description(),
        "torch_device": torch_device_description(torch_device()),
        **{key: env[key] for key in ("cpu_features", "xla_flags", "versions", "python", "platform", "git_commit")},
    }


def run_once(framework: str, config: Config, val_split: Split, shared_init: bool = False) -> dict[str, Any]:
    """Train one framework with `config` (memory counter already reset) and measure the run; with
    `shared_init`, PyTorch starts from the JAX model's initial weights for `train.seed`."""
    if framework == "jax":
        results = train(config)
    else:
        initial = flax_to_torch(initial_model(config)) if shared_init else None
        results = train_torch(config, initial_weights=initial)
    peak_memory = peak_memory_bytes(framework)
    eval_seconds = eval_pass_seconds(framework, config, val_split)
    history = read_jsonl(Path(config.run_dir) / "metrics.jsonl")
    seconds = [row["seconds"] for row in history]
    steady = statistics.fmean(seconds[1:]) if len(seconds) > 1 else None
    images_per_epoch = results["train_images"] // config.train.batch_size * config.train.batch_size
    return {
        "seed": config.train.seed,
        "run_dir": config.run_dir,
        "epochs": len(history),
        "stop_reason": results["stop_reason"],
        "best_epoch": results["best_epoch"],
        "final_val_accuracy": history[-1]["val_accuracy"],
        "best_val_accuracy": max(row["val_accuracy"] for row in history),
        "test_accuracy": results["test_accuracy"],
        "seconds_per_epoch": steady,
        "first_epoch_seconds": seconds[0],
        "train_images_per_s": images_per_epoch / steady if steady else None,
        "eval_images_per_s": len(val_split) / eval_seconds,
        "peak_memory_bytes": peak_memory,
        "val_accuracy_curve": [row["val_accuracy"] for row in history],
    }


def eval_pass_seconds(framework: str, config: Config, split: Split) -> float:
    """Seconds of one evaluation pass over `split` with the run's best checkpoint, after a warm-up pass."""
    if framework == "jax":
        _, weights, _ = restore_weights(config.run_dir)
        eval_step = build_eval_step(config.model, config.train.devices)

        def one_pass() -> Any:
            return evaluate_split(weights, eval_step, split, config.train.eval_batch_size)
    else:
        device = torch_device()
        model = TorchSeedCNN().to(device, memory_format=torch.channels_last)
        best = Path(config.run_dir) / "checkpoints" / "best.pt"
        model.load_state_dict(torch.load(best, map_location=device, weights_only=True))

        def one_pass() -> Any:
            return evaluate_torch(model, split, config.train.eval_batch_size, device, config.model.compute_dtype)

    one_pass()
    start = time.perf_counter()
    one_pass()  # returns Python numbers, so the device work has finished
    return time.perf_counter() - start


def _on_accelerator(framework: str) -> bool:
    if framework == "jax":
        return jax.devices()[0].platform != "cpu"
    return torch_device().type == "cuda"


def reset_peak_memory(framework: str) -> str:
    """Reset the peak-memory counter that the next run of `framework` is measured by; say what it measures."""
    if _on_accelerator(framework):
        if framework == "jax":
            return "JAX device memory_stats()['peak_bytes_in_use'] since the process started (JAX cannot reset it)"
        torch.cuda.reset_peak_memory_stats()
        return "torch.cuda.max_memory_allocated() during the run"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, hence ru_maxrss
    except OSError:
        return "peak resident memory of the whole process since it started (ru_maxrss; earlier runs included)"
    return (
        "peak resident memory of the whole process during the run (ru_maxrss after a reset; "
        "the data and both libraries included)"
    )


def peak_memory_bytes(framework: str) -> int | None:
    """The peak that `reset_peak_memory` describes, in bytes."""
    if _on_accelerator(framework):
        if framework == "jax":
            return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Mean and sample standard deviation over seeds of each metric (None where no run has it)."""
    summary = {}
    for metric in METRICS:
        values = [run[metric] for run in runs if run[metric] is not None]
        summary[metric] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
        }
    return summary


def ratios(jax_summary: dict[str, Any], torch_summary: dict[str, Any]) -> dict[str, float | None]:
    """JAX mean / PyTorch mean of each metric, named as in `METRICS`."""
    out = {}
    for metric, (_, _, _, ratio_name) in METRICS.items():
        numerator, denominator = jax_summary[metric]["mean"], torch_summary[metric]["mean"]
        out[ratio_name] = numerator / denominator if numerator is not None and denominator else None
    return out


def format_table(report: dict[str, Any]) -> str:
    """The summary as a fixed-width text table: mean ± std per framework and the JAX/PyTorch ratio."""

    def cell(stats: dict[str, Any], divisor: float, fmt: str) -> str:
        if stats["mean"] is None:
            return "n/a"
        text = format(stats["mean"] / divisor, fmt)
        return text + (f" ± {format(stats['std'] / divisor, fmt)}" if stats["std"] is not None else "")

    lines = [
        f"{report['machine']} | seeds {report['settings']['seeds']} | epochs {report['settings']['epochs']}",
        f"{'metric':<30}{'jax':>22}{'pytorch':>22}{'jax/pytorch':>13}",
    ]
    for metric, (label, divisor, fmt, ratio_name) in METRICS.items():
        jax_cell, torch_cell = (cell(report["frameworks"][f]["summary"][metric], divisor, fmt) for f in FRAMEWORKS)
        ratio = report["ratios"][ratio_name]
        lines.append(f"{label:<30}{jax_cell:>22}{torch_cell:>22}{'n/a' if ratio is None else f'{ratio:.3f}':>13}")
    return "\n".join(lines)


def plot_comparison(report: dict[str, Any], path: Path) -> None:
    """PublicTest accuracy per epoch (a line per seed) beside train and eval throughput bars."""
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    width = 0.38
    for index, framework in enumerate(FRAMEWORKS):
        colour = f"C{index}"
        for number, run in enumerate(report["frameworks"][framework]["runs"]):
            epochs = range(1, len(run["val_accuracy_curve"]) + 1)
            curves.plot(
                epochs,
                run["val_accuracy_curve"],
                "o-",
                color=colour,
                alpha=0.8,
                label=framework if number == 0 else None,
            )
        summary = report["frameworks"][framework]["summary"]
        throughput = [summary[metric] for metric in ("train_images_per_s", "eval_images_per_s")]
        bars.bar(
            [position + (index - 0.5) * width for position in (0, 1)],
            [stats["mean"] or 0.0 for stats in throughput],
            width,
            yerr=[stats["std"] or 0.0 for stats in throughput],
            color=colour,
            label=framework,
        )
    curves.set(xlabel="epoch", ylabel="PublicTest accuracy", title="PublicTest accuracy (one line per seed)")
    curves.grid(alpha=0.3)
    curves.legend()
    bars.set_xticks([0, 1], ["train", "eval"])
    bars.set(ylabel="images / s (0: not measured)", title=report["machine"])
    bars.grid(alpha=0.3, axis="y")
    bars.legend()
    save_figure(figure, path)
