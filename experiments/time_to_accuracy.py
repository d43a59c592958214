"""Time to accuracy: PublicTest accuracy against wall-clock minutes for runs on the same machine.

    python -m experiments.time_to_accuracy results/seed_cnn.json results/cpu_best.json

Reads each run's results JSON (its `curve`: seconds, train and PublicTest accuracy per epoch),
and writes the curves as JSON and a PNG (default: results/time_to_accuracy.{json,png}): the
"speedrun" view of which recipe reaches which accuracy in how many CPU minutes. The minutes are
cumulative epoch wall time, PublicTest evaluation included and the final evaluation excluded.
Runs from different machines or archives are refused, since their minutes or accuracies do not compare.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fer_jax.commands import run_command
from fer_jax.config import ConfigError


def curve_of(result: dict[str, Any], source: Path) -> dict[str, Any]:
    """One run's curve in minutes, with what identifies the run."""
    if "curve" not in result:
        raise ConfigError(f"{source}: no per-epoch 'curve' (results.json of runs before it was recorded)")
    seconds = result["curve"]["seconds"]
    return {
        "source": str(source),
        "model": result["model"],
        "device": result["device"],
        "dataset_sha256": result.get("dataset_sha256"),
        "command": result["command"],
        "minutes": [total / 60 for total in itertools.accumulate(seconds)],
        "val_accuracy": result["curve"]["val_accuracy"],
        "train_accuracy": result["curve"]["train_accuracy"],
        "test_accuracy": result["test_accuracy"],
    }


def time_to_accuracy(sources: Sequence[Path], out: Path) -> dict[str, Any]:
    from fer_jax.files import write_json
    from fer_jax.train.plotting import save_figure, time_to_accuracy_figure

    curves = {}
    for path in sources:
        curve = curve_of(json.loads(path.read_text()), path)
        name = path.parent.name if path.stem == "results" else path.stem  # a run folder's results.json: the run's
        curves[f"{name} ({curve['model']}, {len(curve['minutes'])} epochs)"] = curve
    if len({curve["device"] for curve in curves.values()}) > 1:
        raise ConfigError("the runs come from different devices: " + ", ".join(c["device"] for c in curves.values()))
    if len({curve["dataset_sha256"] for curve in curves.values()}) > 1:
        raise ConfigError("the runs trained on different archives (dataset_sha256 differs)")
    report = {
        "dataset_sha256": next(iter(curves.values()))["dataset_sha256"],
        "curves": curves,
        "command": "python -m experiments.time_to_accuracy " + " ".join(map(str, sources)),
    }
    write_json(out, report)
    save_figure(time_to_accuracy_figure(curves), out.with_suffix(".png"))
    for name, curve in curves.items():
        best = max(curve["val_accuracy"])
        print(f"{name}: best PublicTest {best:.4f} after {curve['minutes'][curve['val_accuracy'].index(best)]:.1f} min")
    print(f"Wrote {out} and {out.with_suffix('.png')}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.time_to_accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", nargs="+", type=Path, help="results JSONs of runs (e.g. results/seed_cnn.json)")
    parser.add_argument(
        "--out", type=Path, default=Path("results/time_to_accuracy.json"), help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    return run_command("experiments.time_to_accuracy", lambda: time_to_accuracy(args.results, args.out))


if __name__ == "__main__":
    sys.exit(main())
