"""Speed of the seed CNN in JAX and in PyTorch, measured side by side in one run on one machine.

    python -m experiments.bench                         # this machine, results/bench_<device>.json
    python -m experiments.bench --repeats 5 --epoch-images 0 --out results/bench_gpu.json

Each repeat runs every framework once, in a fresh subprocess (so peak memory,
thread pools and compilation caches are its own), alternating which goes first.
A worker measures, on the same real FER-2013 images and config:

- train step images/s: one fixed batch from the host, steady state after the
  first (compiling) call, which is reported as compile seconds, and a few
  untimed warm-up steps; the timed steps run in 4 blocks, whose images/s are
  kept too (`train_step_block_images_per_s`: the spread within one process);
- JAX only, the fast path: `train.steps_per_dispatch` steps per call that
  gather and augment their batches on the device (`data.pipeline=device`);
- whole epoch seconds over `--epoch-images` training images, input pipeline
  included (torchvision DataLoader for PyTorch and the JAX reference path;
  the on-device path for JAX's fast epoch);
- eval images/s over PublicTest (after a warm-up pass);
- peak memory: the accelerator allocator's peak, or on the CPU the worker's
  peak resident memory.

Both frameworks' workers run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (unless
GLIBC_TUNABLES is set already, or with --no-huge-pages): malloc then backs large
buffers with transparent huge pages instead of faulting them in 4 KB at a time.
The JSON records the workers' environment.

The table shows the median and the [min, max] over repeats, the JAX/PyTorch
ratio of the medians, and the median [min, max] of the per-repeat ratios (each
repeat's two workers run back to back, so the machine's slow drift in speed
mostly cancels in their ratio). The JSON holds every repeat as well.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FRAMEWORKS = ("jax", "pytorch")
HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"
"""GLIBC_TUNABLES for both workers: glibc's malloc asks for transparent huge pages, so the step's
large temporary buffers are not faulted in 4 KB at a time (53,000 page faults per JAX step here)."""
TIMED_BLOCKS = 4
REPORTED_ENVIRONMENT = ("GLIBC_TUNABLES", "XLA_FLAGS", "OMP_NUM_THREADS", "XLA_PYTHON_CLIENT_PREALLOCATE")

# metric: (table label, divisor, format, ratio name or None); larger is better for rates, smaller for times.
METRICS: dict[str, tuple[str, float, str, str | None]] = {
    "train_step_images_per_s": ("train step img/s (host batch)", 1, ".0f", "train_throughput_ratio_jax_over_torch"),
    "fast_train_images_per_s": (
        "train img/s, on-device pipeline",
        1,
        ".0f",
        "fast_train_throughput_ratio_jax_over_torch",
    ),
    "compile_seconds": ("first step s (compile)", 1, ".2f", "compile_seconds_ratio_jax_over_torch"),
    "epoch_seconds": ("epoch s, torchvision pipeline", 1, ".2f", "epoch_seconds_ratio_jax_over_torch"),
    "fast_epoch_seconds": ("epoch s, on-device pipeline", 1, ".2f", "fast_epoch_seconds_ratio_jax_over_torch"),
    "eval_images_per_s": ("eval img/s", 1, ".0f", "eval_throughput_ratio_jax_over_torch"),
    "peak_memory_bytes": ("peak memory MiB", 2**20, ".0f", "peak_memory_ratio_jax_over_torch"),
}

RATIO_NOTES = {
    "train_throughput_ratio_jax_over_torch": "JAX train step / PyTorch train step, same host batch (median img/s)",
    "fast_train_throughput_ratio_jax_over_torch": "JAX fused on-device steps (augmentation included) / PyTorch "
    "train step (median img/s)",
    "epoch_seconds_ratio_jax_over_torch": "JAX / PyTorch epoch seconds, both fed by the torchvision DataLoader "
    "(below 1: JAX faster)",
    "fast_epoch_seconds_ratio_jax_over_torch": "JAX on-device-pipeline epoch / PyTorch DataLoader epoch seconds "
    "(below 1: JAX faster)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per framework (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed train steps per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=5,
        help="untimed train steps after the compiling one (default: %(default)s)",
    )
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=4096,
        help="training images in the timed epoch (0: all 28,709; default: %(default)s)",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=1024,
        help="PublicTest images in the timed evaluation (0: all 3,589; default: %(default)s)",
    )
    parser.add_argument(
        "--data", help="Kaggle zip, extracted folder or fer2013.csv (default: $FER2013_ZIP, else data/fer2013.zip)"
    )
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated (default: %(default)s)")
    parser.add_argument(
        "--precisions",
        help="comma-separated model.compute_dtype values, each measured in both frameworks (default: float32, "
        "and bfloat16 where the CPU has AMX or AVX512-BF16 units, or on a GPU)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for both frameworks, e.g. train.batch_size=256 (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="results JSON (default: results/bench_<device>.json)")
    parser.add_argument(
        "--no-huge-pages",
        dest="huge_pages",
        action="store_false",
        help=f"do not give the workers GLIBC_TUNABLES={HUGE_PAGE_MALLOC} (it is left alone when "
        "GLIBC_TUNABLES is already set)",
    )
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser


def worker_config(args: argparse.Namespace) -> Any:
    from fer_jax.config import Config

    config = Config()
    if args.data:
        config.data.source = args.data
    config.data.train_limit = args.epoch_images
    config.data.eval_limit = args.eval_images
    return config.apply_overrides(args.set)


def timed(function: Callable[[], Any], sync: Callable[[Any], Any]) -> float:
    start = time.perf_counter()
    sync(function())
    return time.perf_counter() - start


def timed_steps(
    step_run: Callable[[int], Any], sync: Callable[[Any], Any], args: argparse.Namespace, batch: int
) -> dict[str, Any]:
    """Compile seconds (the first call), untimed warm-up steps, then `args.steps` steps timed in blocks."""
    result: dict[str, Any] = {"compile_seconds": timed(lambda: step_run(1), sync)}
    if args.warmup_steps:
        timed(lambda: step_run(args.warmup_steps), sync)
    sizes = [len(part) for part in (range(args.steps)[i::TIMED_BLOCKS] for i in range(TIMED_BLOCKS)) if part]
    seconds = [timed(lambda size=size: step_run(size), sync) for size in sizes]
    result["train_step_images_per_s"] = sum(sizes) * batch / sum(seconds)
    result["train_step_block_images_per_s"] = [size * batch / s for size, s in zip(sizes, seconds)]
    return result


class DeviceChunks:
    """The on-device pipeline's fused train steps (`Steps.train_chunk`) over the first
    `train.steps_per_dispatch` batches of a split, which is put on the devices once."""

    def __init__(self, config: Any, steps: Any, split: Any, state: Any) -> None:
        import jax

        from fer_jax.data import fer2013 as fer_data
        from fer_jax.train import parallel
        from fer_jax.train.steps import steps_per_dispatch

        per_call, batch = steps_per_dispatch(config), config.train.batch_size
        self.steps, self.state = steps, state
        self.images = jax.device_put(fer_data.to_jax(split.images), parallel.replicated(steps.mesh))
        self.labels = jax.device_put(fer_data.to_jax(split.labels).astype("int32"), parallel.replicated(steps.mesh))
        (self.indices,) = parallel.shard_batch(
            steps.mesh, jax.numpy.arange(per_call * batch).reshape(per_call, batch) % len(split), axis=1
        )
        self.steps_per_call, self.images_per_call = per_call, per_call * batch

    def run(self, calls: int) -> Any:
        """`calls` dispatches; the last one's metrics (block on them to time the calls)."""
        for _ in range(calls):
            self.state, out = self.steps.train_chunk(self.state, self.images, self.labels, self.indices)
        return out


def jax_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the JAX trainer's steps, epochs and evaluation."""
    import jax

    from fer_jax.compare import peak_memory_bytes
    from fer_jax.data import fer2013 as fer_data
    from fer_jax.train.evaluation import evaluate_split, load_splits
    from fer_jax.train.steps import init_state
    from fer_jax.train.trainer import epoch_updates

    config = worker_config(args)
    splits = load_splits(config)
    train, batch = splits["Training"], config.train.batch_size
    state, steps = init_state(config, len(train) // batch)
    images = fer_data.to_jax(train.images[:batch].unsqueeze(1).float().div(255.0))
    labels = fer_data.to_jax(train.labels[:batch])
    block = jax.block_until_ready
    result: dict[str, Any] = {}

    def step_run(count: int) -> Any:
        nonlocal state
        for _ in range(count):
            state, out = steps.train(state, images, labels)
        return out

    result.update(timed_steps(step_run, block, args, batch))

    chunks = DeviceChunks(config, steps, train, state)
    calls = max(1, args.steps // chunks.steps_per_call)
    result["fast_compile_seconds"] = timed(lambda: chunks.run(1), block)
    result["fast_train_images_per_s"] = calls * chunks.images_per_call / timed(lambda: chunks.run(calls), block)
    state = chunks.state

    for key, pipeline in (("epoch_seconds", "torchvision"), ("fast_epoch_seconds", "device")):
        config.data.pipeline = pipeline
        updates = epoch_updates(config, steps, train)

        def epoch() -> Any:
            nonlocal state
            for state, out, _ in updates(state, 1):  # noqa: B007, B020, B023 (each step yields the new state)
                pass
            return out

        result[key] = timed(epoch, block)

    val = splits["PublicTest"]
    evaluate_split(state.weights, steps.eval, val, config.train.eval_batch_size)
    seconds = timed(
        lambda: evaluate_split(state.weights, steps.eval, val, config.train.eval_batch_size), lambda out: out
    )
    result["eval_images_per_s"] = len(val) / seconds
    result["peak_memory_bytes"] = peak_memory_bytes("jax")
    return result


def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the PyTorch baseline's step, epoch and evaluation."""
    import torch

    from fer_jax.baseline.evaluation import evaluate_torch, to_model_input, torch_device
    from fer_jax.baseline.models import TorchSeedCNN
    from fer_jax.baseline.optim import make_torch_optimizer
    from fer_jax.baseline.trainer import torch_train_epoch, torch_train_step
    from fer_jax.compare import peak_memory_bytes
    from fer_jax.train.evaluation import load_splits

    config = worker_config(args)
    splits = load_splits(config)
    train, batch = splits["Training"], config.train.batch_size
    device = torch_device()
    torch.manual_seed(config.train.seed)
    model = TorchSeedCNN().to(device, memory_format=torch.channels_last).train()
    optimizer, schedule = make_torch_optimizer(config, model.parameters(), len(train) // batch)
    images = to_model_input(train.images[:batch].unsqueeze(1).float().div(255.0), device)
    labels = train.labels[:batch].to(device)
    dtype = config.model.compute_dtype

    def sync(out: Any) -> Any:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def step_run(count: int) -> Any:
        for step in range(count):
            out = torch_train_step(model, optimizer, images, labels, schedule(step), step, 0.0, dtype)
        return out

    result = timed_steps(step_run, sync, args, batch)
    result["epoch_seconds"] = timed(
        lambda: torch_train_epoch(model, optimizer, schedule, 0, train, config, 1, device), sync
    )
    val = splits["PublicTest"]
    evaluate_torch(model, val, config.train.eval_batch_size, device, dtype)
    seconds = timed(lambda: evaluate_torch(model, val, config.train.eval_batch_size, device, dtype), sync)
    result["eval_images_per_s"] = len(val) / seconds
    result["peak_memory_bytes"] = peak_memory_bytes("pytorch")
    return result


def worker_environment(huge_pages: bool) -> dict[str, str]:
    """The environment both frameworks' workers run in: this one, no JAX preallocation, and
    (unless turned off or already set) huge-page malloc."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if huge_pages:
        env.setdefault("GLIBC_TUNABLES", HUGE_PAGE_MALLOC)
    return env


def run_worker(module: str, worker: str, argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `python -m MODULE ARGV --worker WORKER` in a fresh process and return the JSON it wrote.

    A fresh process per measurement keeps one candidate's compilation caches and allocator state
    out of the next one's numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", module, *argv, "--worker", worker, "--worker-out", str(out)]
        done = subprocess.run(command, env=env)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"{module}: the worker for {worker!r} failed (exit {done.returncode}); see above")
        return json.loads(out.read_text())


def worker_or_report_main(
    module: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    worker: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[argparse.Namespace, list[str]], Any],
) -> int:
    """The entry point of a benchmark: `--worker` measures once and writes JSON; otherwise report."""
    from fer_jax.commands import run_command
    from fer_jax.files import write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.worker:
        return run_command(module, lambda: write_json(args.worker_out, worker(args)))
    return run_command(module, lambda: report(args, argv))


def spread(values: list[float]) -> dict[str, float | None]:
    """Median, min, max and count of some repeats' values (None where there are none)."""
    return {
        "median": statistics.median(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "n": len(values),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    return {metric: spread([run[metric] for run in runs if run.get(metric) is not None]) for metric in METRICS}


TORCH_COUNTERPART = {"fast_train_images_per_s": "train_step_images_per_s", "fast_epoch_seconds": "epoch_seconds"}
"""JAX's fast-path metrics are compared with PyTorch's one path."""


def ratios(summaries: dict[str, Any]) -> dict[str, float | None]:
    """JAX median / PyTorch median per metric (the fast path's over PyTorch's one path)."""
    if set(FRAMEWORKS) - set(summaries):
        return {}
    out = {}
    for metric, (_, _, _, name) in METRICS.items():
        numerator = summaries["jax"][metric]["median"]
        denominator = summaries["pytorch"][TORCH_COUNTERPART.get(metric, metric)]["median"]
        out[name] = numerator / denominator if numerator is not None and denominator else None
    return out


def paired_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Per ratio: median, min and max over repeats of JAX / PyTorch within the same repeat."""
    if set(FRAMEWORKS) - set(runs):
        return {}
    out = {}
    for metric, (_, _, _, name) in METRICS.items():
        values = [
            jax_run[metric] / torch_run[TORCH_COUNTERPART.get(metric, metric)]
            for jax_run, torch_run in zip(runs["jax"], runs["pytorch"])
            if jax_run.get(metric) is not None and torch_run.get(TORCH_COUNTERPART.get(metric, metric))
        ]
        out[name] = spread(values)
    return out


def format_table(report: dict[str, Any]) -> str:
    def cell(stats: dict[str, Any] | None, divisor: float, fmt: str) -> str:
        if not stats or stats["median"] is None:
            return "-"
        low, high = (format(stats[k] / divisor, fmt) for k in ("min", "max"))
        return f"{format(stats['median'] / divisor, fmt)} [{low}, {high}]"

    lines = [
        f"{report['machine']} | {report['settings']['repeats']} repeats | batch "
        f"{report['settings']['batch_size']} | epoch of {report['settings']['epoch_images']} images",
    ]
    for precision, measured in report["by_precision"].items():
        lines += [f"compute dtype {precision}:", *precision_table(measured, cell)]
    return "\n".join(lines)


def precision_table(measured: dict[str, Any], cell: Callable[..., str]) -> list[str]:
    """The rows of one precision: each metric per framework, and the JAX/PyTorch ratios."""
    summaries = measured["summaries"]
    paired = measured.get("paired_ratios", {})
    lines = [
        f"{'metric':<34}"
        + "".join(f"{f:>26}" for f in summaries)
        + f"{'jax/pytorch':>13}"
        + (f"{'per repeat':>26}" if paired else ""),
    ]
    for metric, (label, divisor, fmt, ratio_name) in METRICS.items():
        cells = "".join(f"{cell(summaries[f].get(metric), divisor, fmt):>26}" for f in summaries)
        ratio = measured["ratios"].get(ratio_name)
        row = f"{label:<34}{cells}{'-' if ratio is None else f'{ratio:.3f}':>13}"
        lines.append(row + (f"{cell(paired.get(ratio_name), 1, '.3f'):>26}" if paired else ""))
    return lines


def supported_precisions() -> str:
    """float32, and bfloat16 where the hardware multiplies it (`model.compute_dtype=auto` picks it there): an
    AVX2-only CPU would only emulate bfloat16, so its numbers would measure the emulation."""
    from fer_jax.models.layers import resolve_compute_dtype

    return ",".join(dict.fromkeys(["float32", resolve_compute_dtype("auto")]))


def measured(runs: dict[str, list[dict[str, Any]]], frameworks: list[str]) -> dict[str, Any]:
    """One precision's summaries, ratios of the medians, per-repeat ratios and raw runs."""
    summaries = {f: summarize(runs[f]) for f in frameworks}
    return {"summaries": summaries, "ratios": ratios(summaries), "paired_ratios": paired_ratios(runs), "runs": runs}


def bench(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.compare import device_slug, machine_fields
    from fer_jax.data.cache import source_sha256
    from fer_jax.files import write_json

    frameworks = [f for f in args.frameworks.split(",") if f]
    if unknown := set(frameworks) - set(FRAMEWORKS):
        raise SystemExit(f"unknown framework(s) {sorted(unknown)}: choose from {', '.join(FRAMEWORKS)}")
    precisions = [p for p in (args.precisions or supported_precisions()).split(",") if p]
    config = worker_config(args)
    env = worker_environment(args.huge_pages)
    runs = {p: {f: [] for f in frameworks} for p in precisions}
    for repeat in range(args.repeats):
        order = [(p, f) for p in precisions for f in frameworks]
        for precision, framework in order if repeat % 2 == 0 else order[::-1]:
            print(f"[bench] repeat {repeat + 1}/{args.repeats}: {framework} {precision}", flush=True)
            worker_argv = [*argv, "--set", f"model.compute_dtype={precision}"]
            runs[precision][framework].append(run_worker("experiments.bench", framework, worker_argv, env))
    report = {
        **machine_fields(),
        "command": "python -m experiments.bench " + shlex.join(argv),
        "dataset_sha256": source_sha256(config.data.resolved_source()),
        "worker_environment": {name: env.get(name) for name in REPORTED_ENVIRONMENT},
        "settings": {
            "repeats": args.repeats,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "batch_size": config.train.batch_size,
            "steps_per_dispatch": config.train.steps_per_dispatch or "auto",
            "epoch_images": args.epoch_images or "all",
            "eval_images": args.eval_images or "all",
            "overrides": args.set,
        },
        "config": config.to_dict(),
        "by_precision": {p: measured(runs[p], frameworks) for p in precisions},
        "ratio_notes": RATIO_NOTES,
    }
    out = args.out or Path(f"results/bench_{device_slug()}.json")
    write_json(out, report)
    print(format_table(report))
    print(f"Wrote {out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return worker_or_report_main(
        "experiments.bench",
        build_parser(),
        argv,
        lambda args: jax_worker(args) if args.worker == "jax" else torch_worker(args),
        bench,
    )


if __name__ == "__main__":
    sys.exit(main())
