"""Run an experiment config (experiments/configs/NAME.py) for one or more seeds with the package trainer.

    python -m experiments.run seed_cnn_adam --seeds 3
    python -m experiments.run seed_cnn_sgd --quick --set train.patience=3
    python -m experiments.run path/to/my_config.py --data data/fer2013.zip

Each seed is one `fer_jax.train.trainer.train` run in runs/<name>/<timestamp>/seed<k>/; then
runs/<name>/<timestamp>/summary.json holds the per-seed results and their mean ± std
(`python -m experiments.table` collects these into the results table).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import configs
from fer_jax.commands import run_command
from fer_jax.config import Config, ConfigError, known_keys, quick

STATISTICS = (
    "test_accuracy",
    "val_accuracy",
    "test_loss",
    "epochs",
    "best_epoch",
    "seconds_per_epoch",
    "first_epoch_seconds",
)
"""results.json fields whose mean ± std over seeds summary.json holds."""
RUN_FIELDS = (
    "seed",
    "run_dir",
    *STATISTICS,
    "stop_reason",
    "train_images",
    "val_images",
    "test_images",
    "device",
    "framework",
    "git_commit",
)
"""results.json fields copied per seed into summary.json (the confusion matrix stays in results.json)."""


def build_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<22}{configs.summary_line(name)}" for name in configs.available())
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description=__doc__.split("\n\n")[0].strip() + "\n\n"
        "Train on Training, select the checkpoint on PublicTest (early stopping), report PrivateTest. "
        "Seeds train.seed .. train.seed+N-1 run one after the other; summary.json is rewritten after each, "
        "so an interrupted experiment keeps the seeds that finished.",
        epilog=f"experiment configs (experiments/configs/):\n{listing}\n\n"
        "Order: get_config(), then --quick (fer_jax.config.quick and the config's QUICK_OVERRIDES), "
        "--data, --set.\n\nconfig keys for --set: " + ", ".join(known_keys()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config", metavar="CONFIG", help="an experiment name from the list below, or a path to a config .py file"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs on 2,048 training and 512 PublicTest/PrivateTest images: a smoke test "
        "of about a minute per seed on a CPU, not a result",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train seeds train.seed .. train.seed+N-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set train.epochs=30 (repeatable)",
    )
    parser.add_argument(
        "--data", help="Kaggle zip, extracted folder or fer2013.csv (default: $FER2013_ZIP, else data/fer2013.zip)"
    )
    parser.add_argument(
        "--runs", default="runs", type=Path, metavar="DIR", help="root of the run folders (default: %(default)s)"
    )
    parser.add_argument(
        "--results",
        metavar="JSON",
        help="with one seed: also write its results.json here (e.g. results/cpu_best.json); an interrupted run "
        "continues with `fer-jax train --resume RUN_DIR/seed0 --results JSON`",
    )
    return parser


def experiment_config(module: Any, quick_run: bool, data: str | None, overrides: list[str]) -> Config:
    """The config module's `get_config()`, then --quick, --data and --set in that order."""
    config = module.get_config()
    if not isinstance(config, Config):
        raise ConfigError(f"{module.__name__}.get_config() returned {type(config).__name__}, not a fer_jax Config")
    if quick_run:
        quick(config)
        config.apply_overrides(list(getattr(module, "QUICK_OVERRIDES", [])))
    if data:
        config.set("data.source", data)
    config.apply_overrides(overrides)
    return config


def new_run_root(runs: Path, name: str) -> Path:
    """runs/<name>/<timestamp>, with a suffix if that folder exists already."""
    base = runs / name / time.strftime("%Y%m%d-%H%M%S")
    root, number = base, 1
    while root.exists():
        root, number = base.with_name(f"{base.name}-{number}"), number + 1
    root.mkdir(parents=True)
    return root


def mean_std(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation of the values that are not None (std None below two)."""
    present = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(present) if present else None,
        "std": statistics.stdev(present) if len(present) > 1 else None,
        "n": len(present),
    }


def summarize_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed results (the fields of RUN_FIELDS) and mean ± std of each of STATISTICS."""
    runs = [{key: result.get(key) for key in RUN_FIELDS} for result in results]
    return {"runs": runs, **{key: mean_std([run[key] for run in runs]) for key in STATISTICS}}


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's results.json, with its seed from config.json."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    results.setdefault("seed", Config.load(run_dir / "config.json").train.seed)
    results["run_dir"] = str(run_dir)
    return results


def run_experiment(
    name: str,
    module: Any,
    config: Config,
    seeds: int,
    runs: Path,
    quick_run: bool,
    argv: list[str],
    results_copy: str | None = None,
) -> dict[str, Any]:
    """Train every seed (or call the module's own `run`) and write summary.json; return the summary.
    `results_copy`: with one seed, where to write a copy of its results.json too."""
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import write_json

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if results_copy and (seeds != 1 or callable(getattr(module, "run", None))):
        raise ConfigError("--results copies one run's results.json: it needs --seeds 1 and a plain config")
    run_root = new_run_root(runs, name)
    config.run_dir = str(run_root)  # each seed runs in run_root/seed<k>
    seed_list = [config.train.seed + k for k in range(seeds)]
    summary: dict[str, Any] = {
        "experiment": name,
        "description": next(iter((module.__doc__ or "").strip().splitlines()), ""),
        "config_module": str(Path(module.__file__).resolve()),
        "command": shlex.join(["python", "-m", "experiments.run", *argv]),
        "argv": argv,
        "quick": quick_run,
        "seeds": seed_list,
        "run_root": str(run_root),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "complete": False,
    }
    print(f"Experiment {name}: seeds {seed_list}, runs in {run_root}")

    def machine() -> dict[str, Any]:
        env = environment_info()
        return {"machine": device_description(), "git_commit": env["git_commit"], "versions": env["versions"]}

    try:
        if callable(getattr(module, "run", None)):
            extra = module.run(config, seeds=seeds, run_root=run_root, quick_run=quick_run, argv=argv)
            for variant in extra.get("frameworks", {}).values():
                variant.update(summarize_results([read_results(d) for d in variant.pop("run_dirs")]))
            summary.update(machine(), **extra)
        else:
            from fer_jax.train.trainer import train

            results = []
            for seed in seed_list:
                run_config = copy.deepcopy(config)
                run_config.train.seed = seed
                run_config.run_dir = str(run_root / f"seed{seed}")
                results.append(train(run_config, results_copy=results_copy) | {"seed": seed})
                summary.update(machine(), **summarize_results(results))
                write_json(run_root / "summary.json", summary)
    except BaseException:
        if not any(run_root.iterdir()):  # failed before anything was written (e.g. missing data)
            run_root.rmdir()
        raise
    summary.update(complete=True, finished=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    write_json(run_root / "summary.json", summary)
    print(describe(summary))
    print(f"Wrote {run_root / 'summary.json'}")
    return summary


def describe(summary: dict[str, Any]) -> str:
    """One line per framework (or one line): PrivateTest and PublicTest accuracy, mean ± std over seeds."""

    def stat(stats: dict[str, Any]) -> str:
        if stats["mean"] is None:
            return "n/a"
        return f"{stats['mean']:.4f}" + (f" ± {stats['std']:.4f}" if stats["std"] is not None else "")

    variants = summary.get("frameworks") or {"": summary}
    return "\n".join(
        f"{summary['experiment']}{f' ({label})' if label else ''}: PrivateTest accuracy "
        f"{stat(v['test_accuracy'])}, PublicTest {stat(v['val_accuracy'])} "
        f"(n={v['test_accuracy']['n']})"
        for label, v in variants.items()
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def run() -> None:
        name, module = configs.load(args.config)
        config = experiment_config(module, args.quick, args.data, args.set)
        run_experiment(name, module, config, args.seeds, args.runs, args.quick, argv, args.results)

    return run_command("experiments.run", run)


if __name__ == "__main__":
    sys.exit(main())
