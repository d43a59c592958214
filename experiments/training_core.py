"""The training core before and after a change, measured in one run: train throughput, compilations and start-up
time per seed of a `--seeds N` run, and a fresh process's time to its first prediction from a run folder.

    python -m experiments.training_core --data ../shared/datasets/fer2013.zip --baseline ../before \\
        --out results/training_core_cpu.json

`--baseline` names another checkout of fer-jax (the commit before the change) measured in the same run, its
processes interleaved with this one's and the order turned on every repeat, so the machine's drift spreads
over both. Every measurement is a fresh process run in its checkout (`PYTHONPATH` set to it):

- **throughput**: `experiments.throughput`'s worker for the CPU-best net (vgg_bn x0.375, on-device pipeline),
  images/s over timed blocks after one untimed call;
- **seeds**: `python -m experiments.run seed_cnn_adam --quick --seeds N` (one epoch of 2,048 faces per seed, on
  the device pipeline), with JAX's compile log counting the train step's compilations per seed and the seconds
  from each seed's start (`trainer._train`) to its first train step's return (the progress bar's first update);
- **predict**: `fer-jax predict PHOTO --checkpoint RUN` on a 640x480 photo, RUN being that checkout's seed-0 run
  folder, from start to exit, with an empty and with a warm compilation cache.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.cold_start import environment, git_commit, photo_640x480, spread, timed

ROOT = Path(__file__).resolve().parent.parent
CPU_BEST = "vgg_bn x0.375"
"""The `experiments.throughput` candidate of the CPU-best net (experiments/configs/cpu_best.py)."""
SEEDS_SCRIPT = """
import json, logging, sys, time
from fer_jax.environment import use_project_xla_flags
use_project_xla_flags()
import jax
from experiments.run import main
from fer_jax.train import trainer
starts, first_steps, compiles = [], [], []
Bar, train = trainer.tqdm, trainer._train

class FirstStep(Bar):
    def update(self, n=1):
        if len(first_steps) < len(starts):
            first_steps.append(time.perf_counter() - starts[-1])
        return super().update(n)

def seed_run(*args, **kwargs):
    starts.append(time.perf_counter())
    compiles.append(0)
    return train(*args, **kwargs)

class CompileCount(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith(("Compiling jit(train_chunk)", "Compiling jit(train_step)")):
            compiles[-1] += 1

trainer.tqdm, trainer._train = FirstStep, seed_run
logging.getLogger().addHandler(CompileCount(logging.WARNING))
with jax.log_compiles():
    assert main(sys.argv[1:]) == 0
print("RESULT " + json.dumps({"first_step_seconds": first_steps, "train_step_compiles": compiles}))
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.training_core",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="the FER-2013 archive")
    parser.add_argument("--baseline", help="another fer-jax checkout to measure in the same run (the commit before)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per measurement (default: 2)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the --seeds run (default: 3)")
    parser.add_argument("--out", required=True, help="the results JSON")
    return parser


def throughput_worker(checkout: Path, data: str, work: Path) -> dict[str, Any]:
    """The CPU-best net's train throughput in a fresh process of `checkout`."""
    out = work / "throughput.json"
    command = [sys.executable, "-m", "experiments.throughput", "--data", data, "--only", CPU_BEST]
    timed([*command, "--worker", CPU_BEST, "--worker-out", str(out)], checkout, work / "cache-throughput")
    return json.loads(out.read_text())


def seeds_run(checkout: Path, data: str, seeds: int, work: Path) -> dict[str, Any]:
    """Compilations of the train step and seconds to the first step, per seed of one `--seeds` run."""
    runs = work / f"runs-{checkout.name}"
    args = ["seed_cnn_adam", "--quick", "--seeds", str(seeds), "--data", data, "--runs", str(runs)]
    args += ["--set", "data.pipeline=device", "--set", "train.epochs=1"]
    done = subprocess.run(
        [sys.executable, "-c", SEEDS_SCRIPT, *args],
        cwd=checkout,
        env=environment(checkout, work / f"cache-seeds-{checkout.name}"),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{checkout}: the --seeds run failed: {done.stderr.strip().splitlines()[-1:]}")
    (run_dir,) = runs.glob("seed_cnn_adam/*/seed0")
    return {**json.loads(lines[-1].removeprefix("RESULT ")), "run_dir": str(run_dir)}


def predict_seconds(checkout: Path, photo: Path, run_dir: str, cache: Path, work: Path) -> float:
    """Wall seconds of `fer-jax predict PHOTO --checkpoint RUN_DIR` in a fresh process of `checkout`."""
    command = [sys.executable, "-m", "fer_jax", "predict", str(photo), "--checkpoint", run_dir]
    seconds, _ = timed([*command, "--out", str(work / "predict-out")], checkout, cache)
    return seconds


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    checkouts = {"this": ROOT, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    photo = photo_640x480(work)
    rows: dict[str, dict[str, Any]] = {
        name: {"commit": git_commit(path), "throughput": [], "predict_empty": [], "predict_warm": []}
        for name, path in checkouts.items()
    }
    for name, path in checkouts.items():
        print(f"[training_core] {name}: --seeds {args.seeds}", flush=True)
        rows[name]["seeds"] = seeds_run(path, args.data, args.seeds, work)
    for repeat in range(args.repeats):
        order = list(checkouts) if repeat % 2 == 0 else list(checkouts)[::-1]
        for name in order:
            path, row = checkouts[name], rows[name]
            print(f"[training_core] repeat {repeat + 1}/{args.repeats}: {name}", flush=True)
            row["throughput"].extend(throughput_worker(path, args.data, work)["block_images_per_s"])
            run_dir, empty = row["seeds"]["run_dir"], work / f"cache-empty-{name}-{repeat}"
            row["predict_empty"].append(predict_seconds(path, photo, run_dir, empty, work))
            row["predict_warm"].append(predict_seconds(path, photo, run_dir, empty, work))
    return {
        name: {
            "commit": row["commit"],
            "train_images_per_s": spread(row["throughput"]),
            "train_step_compiles_per_seed": row["seeds"]["train_step_compiles"],
            "first_step_seconds_per_seed": row["seeds"]["first_step_seconds"],
            "predict_from_run_empty_cache_seconds": spread(row["predict_empty"]),
            "predict_from_run_warm_cache_seconds": spread(row["predict_warm"]),
        }
        for name, row in rows.items()
    }


def format_table(report: dict[str, Any]) -> str:
    def shown(values: dict[str, float], digits: int) -> str:
        return f"{values['median']:.{digits}f} [{values['min']:.{digits}f}, {values['max']:.{digits}f}]"

    lines = [
        f"{report['machine']} | {report['settings']['repeats']} repeats | median [min, max]",
        "",
        f"| checkout | train img/s ({CPU_BEST}) | train-step compiles per seed | seconds to first step per seed "
        "| predict from a run, empty cache (s) | warm cache (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["checkouts"].items():
        first = ", ".join(f"{s:.1f}" for s in row["first_step_seconds_per_seed"])
        lines.append(
            f"| {name} ({(row['commit'] or '?')[:7]}) | {shown(row['train_images_per_s'], 0)} | "
            f"{row['train_step_compiles_per_seed']} | {first} | "
            f"{shown(row['predict_from_run_empty_cache_seconds'], 2)} | "
            f"{shown(row['predict_from_run_warm_cache_seconds'], 2)} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.compare import machine_fields
    from fer_jax.data.cache import source_sha256
    from fer_jax.files import write_json

    with tempfile.TemporaryDirectory() as tmp:
        checkouts = measure(args, Path(tmp))
    report = {
        **machine_fields(),
        "command": "python -m experiments.training_core " + shlex.join(argv),
        "dataset_sha256": source_sha256(args.data),
        "settings": {"repeats": args.repeats, "seeds": args.seeds, "throughput_candidate": CPU_BEST},
        "checkouts": checkouts,
    }
    write_json(args.out, report)
    print(format_table(report))
    print(f"Wrote {args.out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from fer_jax.commands import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_command("experiments.training_core", lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
