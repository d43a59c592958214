"""Train throughput of candidate networks in JAX on this machine: which nets fit a CPU-hours budget.

    python -m experiments.throughput --data ../shared/datasets/fer2013.zip --out results/throughput_cpu.json
    python -m experiments.throughput --only "seed_cnn,vgg_bn x0.5" --set train.batch_size=128

Each candidate (a zoo model and width, `CANDIDATES`) is measured in a fresh subprocess, the
candidates in reverse order on every other repeat, so the machine's drift spreads over all of
them. A worker builds the trainer exactly as `fer-jax train` does with `data.pipeline=device`
(augmentation, dropout and BatchNorm included), compiles the fused on-device steps, runs one
untimed call, then times `--blocks` blocks of `--calls` calls each. It also records the
parameter count and XLA's count of forward FLOPs per image. The table gives median [min, max] images/s over
repeats and blocks, and what that means for an epoch of 28,709 faces and for a 2-hour budget.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.bench import DeviceChunks, run_worker, spread, worker_environment, worker_or_report_main

CANDIDATES: dict[str, list[str]] = {
    "seed_cnn": ["model.name=seed_cnn"],
    "vgg_bn x0.25": ["model.name=vgg_bn", "model.width=0.25"],
    "vgg_bn x0.375": ["model.name=vgg_bn", "model.width=0.375"],
    "vgg_bn x0.5": ["model.name=vgg_bn", "model.width=0.5"],
    "vgg_bn x0.375 batch 128": ["model.name=vgg_bn", "model.width=0.375", "train.batch_size=128"],
    "vgg_bn x0.5 batch 128": ["model.name=vgg_bn", "model.width=0.5", "train.batch_size=128"],
    "vgg_bn x0.375 crop 40": ["model.name=vgg_bn", "model.width=0.375", "model.input_crop=40"],
    "vgg_bn x0.5 crop 40": ["model.name=vgg_bn", "model.width=0.5", "model.input_crop=40"],
    "resnet18 x0.25": ["model.name=resnet18", "model.width=0.25"],
    "resnet18 x0.375": ["model.name=resnet18", "model.width=0.375"],
}
"""Candidate name -> config overrides (on top of `--set`)."""
TRAINING_IMAGES = 28_709
BLOCK_STEPS = 32
"""Train steps per timed block, unless `--calls` says otherwise."""
BUDGET_SECONDS = 7_200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=2, help="workers per candidate (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per worker (default: %(default)s)")
    parser.add_argument(
        "--calls",
        type=int,
        default=0,
        help="fused calls (train.steps_per_dispatch steps each) per block (default: 0, as many as make 32 steps)",
    )
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument(
        "--data", help="Kaggle zip, extracted folder or fer2013.csv (default: $FER2013_ZIP, else data/fer2013.zip)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for every candidate"
    )
    parser.add_argument("--out", type=Path, help="results JSON (default: results/throughput_<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser


def candidate_config(args: argparse.Namespace, name: str) -> Any:
    from fer_jax.config import Config

    config = Config()
    if args.data:
        config.data.source = args.data
    config.data.pipeline = "device"
    config.data.eval_limit = 1
    return config.apply_overrides([*args.set, *CANDIDATES[name]])


def forward_flops_per_image(config: Any) -> float | None:
    """XLA's FLOP count of one eval-mode forward pass, per image, with XLA's own convolution."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fer_jax.models.zoo import create_model

    model = create_model(config.model, 0)
    model.eval()
    graph, weights = nnx.split(model)
    batch = 8
    forward = jax.jit(lambda weights, x: nnx.merge(graph, weights)(x))
    compiled = forward.lower(weights, jnp.zeros((batch, 48, 48, 1))).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch if cost and "flops" in cost else None


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One candidate's measurement in this process."""
    import jax

    from fer_jax.models.zoo import count_params, create_model
    from fer_jax.train.evaluation import load_splits
    from fer_jax.train.steps import init_state

    config = candidate_config(args, args.worker)
    train = load_splits(config)["Training"]
    state, steps = init_state(config, len(train) // config.train.batch_size)
    chunks = DeviceChunks(config, steps, train, state)
    start = time.perf_counter()
    jax.block_until_ready(chunks.run(1))
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(chunks.run(1))
    calls = args.calls or max(1, BLOCK_STEPS // chunks.steps_per_call)
    rates = []
    for _ in range(args.blocks):
        start = time.perf_counter()
        jax.block_until_ready(chunks.run(calls))
        rates.append(calls * chunks.images_per_call / (time.perf_counter() - start))
    return {
        "parameters": count_params(create_model(config.model, 0)),
        "forward_flops_per_image": forward_flops_per_image(config),
        "first_call_seconds": compile_seconds,
        "block_images_per_s": rates,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [rate for run in runs for rate in run["block_images_per_s"]]
    median = statistics.median(rates)
    return {
        "parameters": runs[0]["parameters"],
        "forward_mflops_per_image": runs[0]["forward_flops_per_image"] / 1e6,
        "images_per_s": spread(rates),
        "epoch_seconds": TRAINING_IMAGES / median,
        "epochs_in_2_hours": BUDGET_SECONDS * median / TRAINING_IMAGES,
        "first_call_seconds": spread([run["first_call_seconds"] for run in runs]),
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['machine']} | batch {report['config']['train']['batch_size']} unless named | "
        f"{report['settings']['repeats']} repeats x {report['settings']['blocks']} blocks",
        "| candidate | parameters | forward MFLOP/img | train img/s | epoch s | epochs in 2 h |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, row in report["candidates"].items():
        rate = row["images_per_s"]
        lines.append(
            f"| {name} | {row['parameters']:,} | {row['forward_mflops_per_image']:.0f} | "
            f"{rate['median']:.0f} [{rate['min']:.0f}, {rate['max']:.0f}] | {row['epoch_seconds']:.0f} | "
            f"{row['epochs_in_2_hours']:.0f} |"
        )
    return "\n".join(lines)


def throughput(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.compare import device_slug, machine_fields
    from fer_jax.config import ConfigError
    from fer_jax.data.cache import source_sha256
    from fer_jax.files import write_json

    names = [n.strip() for n in args.only.split(",")] if args.only else list(CANDIDATES)
    if unknown := [n for n in names if n not in CANDIDATES]:
        raise ConfigError(f"unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}")
    config = candidate_config(args, names[0])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            print(f"[throughput] repeat {repeat + 1}/{args.repeats}: {name}", flush=True)
            runs[name].append(run_worker("experiments.throughput", name, argv, worker_environment(huge_pages=True)))
    report = {
        **machine_fields(),
        "command": "python -m experiments.throughput " + shlex.join(argv),
        "dataset_sha256": source_sha256(config.data.resolved_source()),
        "settings": {"repeats": args.repeats, "blocks": args.blocks, "calls": args.calls, "overrides": args.set},
        "config": config.to_dict(),
        "candidate_overrides": {name: CANDIDATES[name] for name in names},
        "candidates": {name: summarize(runs[name]) for name in names},
        "runs": runs,
    }
    out = args.out or Path(f"results/throughput_{device_slug()}.json")
    write_json(out, report)
    print(format_table(report))
    print(f"Wrote {out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return worker_or_report_main("experiments.throughput", build_parser(), argv, worker, throughput)


if __name__ == "__main__":
    sys.exit(main())
