"""Ablation of a recipe: variants of one base config, each a full training run, compared on PublicTest only.

    python -m experiments.ablation --data ../shared/datasets/fer2013.zip            # small CPU scale
    python -m experiments.ablation sota_vgg_bn --scale none --out results/ablation_gpu.json   # a config as it is
    python -m experiments.ablation seed_cnn_search --scale none --out results/seed_cnn_search.json --continue

Each variant is one `fer_jax.train.trainer.train` run (runs/ablation/<timestamp>/<variant>/) of the
base config (default: experiments/configs/sota_resnet18.py), shrunk by `--scale small` (default:
SMALL_SCALE) and changed by the variant's overrides. The variants are the config module's
`VARIANTS` (name -> overrides) if it has one, else this module's: the full recipe, then one
ingredient off at a time. `--only` picks some of them; `--continue` keeps the variants already
in `--out` and runs the rest, so a search can span sessions. The variants are compared on their
PublicTest accuracy (the selection split), with and without flip TTA: PrivateTest is the
reported split, and choosing a recipe on it would bend the protocol, so its numbers are left
out of the ablation JSON (each run's results.json still has them). The JSON records the
machine, the command, the settings and, per variant, its overrides, accuracies and seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import configs
from experiments.run import new_run_root
from fer_jax.commands import run_command
from fer_jax.config import Config, ConfigError

SMALL_SCALE = [
    "model.width=0.125",
    "model.compute_dtype=float32",
    "data.train_limit=4096",
    "data.eval_limit=1024",
    "train.epochs=5",
    "train.batch_size=64",
    "optim.warmup_epochs=0.5",
    "train.patience=0",
]
"""`--scale small`: ResNet-18 at 1/8 width (8-64 channels), 4,096 training and 1,024 PublicTest images,
5 epochs: about 1.5 minutes a variant on one core of a 2-core AMD EPYC."""

VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "- label smoothing": ["optim.label_smoothing=0"],
    "- EMA": ["train.ema_decay=0"],
    "- random erasing": ["data.erasing=0"],
    "- shift (crop + pad)": ["data.translate=0"],
    "- warmup": ["optim.warmup_epochs=0"],
    "- weight decay": ["optim.weight_decay=0"],
    "none of these": [
        "optim.label_smoothing=0",
        "train.ema_decay=0",
        "data.erasing=0",
        "data.translate=0",
        "optim.warmup_epochs=0",
        "optim.weight_decay=0",
    ],
}
"""Variant name -> `key=value` overrides of the base recipe."""


def variant_configs(base: Config, variants: dict[str, list[str]]) -> dict[str, Config]:
    """A copy of `base` per variant, with the variant's overrides applied."""
    return {name: copy.deepcopy(base).apply_overrides(overrides) for name, overrides in variants.items()}


def slug(name: str) -> str:
    """A folder name for a variant ('- label smoothing' -> 'no-label-smoothing')."""
    return re.sub(r"[^a-z0-9.]+", "-", name.replace("- ", "no ").lower()).strip("-")


def whole_command(command: str) -> str:
    """An ablation's command without its `--only NAME` (each variant may have run on its own): the command
    that runs every variant."""
    words = shlex.split(command)
    while "--only" in words:
        del words[words.index("--only") : words.index("--only") + 2]
    return shlex.join(words)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The ablation as a Markdown table, PublicTest numbers only.

    Each row's difference is to the recipe trained with the same seed (a row whose only override, if any, is
    the seed), so a second seed's rows are compared with the recipe's second seed; a seed column appears once
    two differ. Without that recipe row (`--only` left it out) the difference is '-'. Rows of reports written
    before rows recorded their seed count as seed 0, the config's default.
    """
    seeds = [row.get("seed", 0) for row in rows]
    references: dict[int, float] = {}
    for seed, row in zip(seeds, rows):
        if all(override.startswith("train.seed=") for override in row.get("overrides", [])):
            references.setdefault(seed, row["val_accuracy"])
    several_seeds = len(references) > 1
    seed_header, seed_rule = (" seed |", " ---: |") if several_seeds else ("", "")
    lines = [
        f"| variant |{seed_header} PublicTest acc | Δ vs recipe{' (same seed)' if several_seeds else ''} | "
        "flip TTA | best epoch | train acc (last epoch) | s |",
        f"| --- |{seed_rule} ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for seed, row in zip(seeds, rows):
        seed_cell = f" {seed} |" if several_seeds else ""
        delta = f"{row['val_accuracy'] - references[seed]:+.4f}" if seed in references else "-"
        lines.append(
            f"| {row['variant']} |{seed_cell} {row['val_accuracy']:.4f} | {delta} | {row['val_accuracy_tta']:.4f} | "
            f"{row['best_epoch']} | {row['last_train_accuracy']:.4f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def run_ablation(
    base_name: str,
    base: Config,
    variants: dict[str, list[str]],
    out: Path,
    runs: Path,
    argv: list[str],
    keep: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Train every variant of `base`; write `out` after each one (an interrupted ablation keeps what finished).

    `keep`: rows of an earlier report of the same base to carry over; their variants are not run again.
    """
    from fer_jax.data.cache import source_sha256
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import read_jsonl, write_json
    from fer_jax.train.trainer import train

    run_root = new_run_root(runs, "ablation")
    env = environment_info()
    command = shlex.join(["python", "-m", "experiments.ablation", *argv])
    report: dict[str, Any] = {
        "base_config": base_name,
        "machine": device_description(),
        "command": command,
        "git_commit": env["git_commit"],
        "versions": env["versions"],
        "dataset_sha256": source_sha256(base.data.resolved_source()),
        "compared_on": "PublicTest (the selection split); PrivateTest is not used to compare variants",
        "settings": base.to_dict(),
        "run_root": str(run_root),
        "variants": list(keep),
        "complete": False,
    }
    started = time.perf_counter()
    done = {row["variant"] for row in keep}
    for name, config in variant_configs(base, variants).items():
        if name in done:
            continue
        config.run_dir = str(run_root / slug(name))
        print(f"=== {name}: {' '.join(variants[name]) or 'the recipe as it is'}")
        variant_start = time.perf_counter()
        results = train(config)
        history = read_jsonl(Path(config.run_dir) / "metrics.jsonl")
        report["variants"].append(
            {
                "variant": name,
                "overrides": variants[name],
                "seed": config.train.seed,
                "val_accuracy": results["val_accuracy"],
                "val_accuracy_tta": results["val_accuracy_tta"],
                "best_epoch": results["best_epoch"],
                "last_train_accuracy": history[-1]["train_accuracy"],
                "val_accuracy_per_epoch": [row["val_accuracy"] for row in history],
                "train_accuracy_per_epoch": [row["train_accuracy"] for row in history],
                "seconds_per_epoch": results["seconds_per_epoch"],
                "compute_dtype": results["compute_dtype"],  # what `auto` resolved to on this machine
                "cpu_features": results["cpu_features"],
                "seconds": time.perf_counter() - variant_start,
                "run_dir": config.run_dir,
                "git_commit": results["git_commit"],
                "command": command,
            }
        )
        report["wall_seconds"] = time.perf_counter() - started
        write_json(out, report)
    report["complete"] = True
    write_json(out, report)
    table = format_table(report["variants"])
    print(table)
    print(f"Wrote {out} ({report.get('wall_seconds', 0.0) / 60:.1f} minutes)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", default="sota_resnet18", help="base recipe (default: %(default)s)")
    parser.add_argument(
        "--scale",
        choices=("small", "none"),
        default="small",
        help="small: SMALL_SCALE's overrides (a CPU ablation); none: the config as it is",
    )
    parser.add_argument("--data", help="Kaggle zip, extracted folder or fer2013.csv")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME...]",
        help="run only these variants (comma-separated names, as the table shows them)",
    )
    parser.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="keep the variants already in --out (same base config) and run only the others",
    )
    parser.add_argument("--out", type=Path, default=Path("results/ablation_cpu.json"), help="(default: %(default)s)")
    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="root of the run folders (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    def run() -> None:
        name, module = configs.load(args.config)
        base = module.get_config()
        if args.scale == "small":
            base.apply_overrides(SMALL_SCALE)
        if args.data:
            base.set("data.source", args.data)
        base.apply_overrides(args.set)
        variants = all_variants = getattr(module, "VARIANTS", VARIANTS)
        if args.only:
            wanted = [v.strip() for v in args.only.split(",")]
            unknown = [v for v in wanted if v not in variants]
            if unknown:
                raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}")
            variants = {v: variants[v] for v in wanted}
        keep = []
        if args.continue_ and args.out.is_file():
            earlier = json.loads(args.out.read_text())
            if earlier.get("base_config") != name:
                raise ConfigError(f"{args.out} holds an ablation of {earlier.get('base_config')!r}, not {name!r}")
            keep = [row for row in earlier["variants"] if row["variant"] in all_variants]
        run_ablation(name, base, variants, args.out, args.runs, argv, keep)

    return run_command("experiments.ablation", run)


if __name__ == "__main__":
    sys.exit(main())
