"""The one trainer: jit-compiled Optax steps, early stopping on PublicTest, Orbax checkpoints.

`train(config)` runs (or resumes) a run in `config.run_dir` and leaves there:
config.json, environment.json, metrics.jsonl, checkpoints/{latest,best}/,
curves.png, confusion_matrix.png and results.json (PrivateTest accuracy of the
checkpoint that PublicTest selected).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from fer_jax import data as fer_data
from fer_jax import plotting
from fer_jax.checkpoints import RunCheckpoints
from fer_jax.config import Config
from fer_jax.environment import environment_info
from fer_jax.evaluation import evaluate_checkpoint, evaluate_split, load_splits
from fer_jax.files import write_json, write_jsonl
from fer_jax.models import count_params
from fer_jax.steps import Steps, TrainState, init_state


class TrainingError(Exception):
    """The run cannot start or continue; the message says why in one line."""


def train(config: Config, resume: bool = False, results_copy: str | None = None) -> dict[str, Any]:
    """Train (or with `resume`, continue) the run in `config.run_dir`; return its results."""
    run_dir = Path(config.run_dir)
    if run_dir.joinpath("checkpoints", "latest").is_dir() and not resume:
        raise TrainingError(f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or another --run-dir")
    splits = load_splits(config)
    train_split, val_split, test_split = splits["Training"], splits["PublicTest"], splits["PrivateTest"]
    steps_per_epoch = len(train_split) // config.train.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{len(train_split)} training images are fewer than one batch of {config.train.batch_size}")

    state, steps = init_state(config, steps_per_epoch)
    checkpoints = RunCheckpoints(run_dir)
    record = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "epochs_without_improvement": 0, "history": []}
    if resume and checkpoints.has("latest"):
        state, record = checkpoints.restore("latest", state)
        print(f"Resuming {run_dir} after epoch {record['epoch']}")
    write_json(run_dir / "config.json", config.to_dict())
    write_json(run_dir / "environment.json", environment_info())
    write_jsonl(run_dir / "metrics.jsonl", record["history"])
    print(f"{config.model.name}: {count_params(state.params):,} parameters | train {len(train_split)}, "
          f"val {len(val_split)}, test {len(test_split)} images | {jax.devices()[0].platform}")

    stop_reason = "early_stopping" if _patience_exhausted(config, record) else "max_epochs"
    first_epoch = config.train.epochs + 1 if stop_reason == "early_stopping" else record["epoch"] + 1
    for epoch in range(first_epoch, config.train.epochs + 1):
        start = time.perf_counter()
        state, train_metrics = _train_epoch(state, steps, train_split, config, epoch)
        val = evaluate_split(state, steps, val_split, config.train.eval_batch_size)
        row = {
            "epoch": epoch,
            "train_loss": train_metrics["loss"],
            "train_accuracy": train_metrics["accuracy"],
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "learning_rate": float(steps.learning_rate(state.step)),
            "seconds": time.perf_counter() - start,
        }
        if not math.isfinite(row["train_loss"]):
            stop_reason = "non_finite_loss"
            print(f"Epoch {epoch}: training loss is {row['train_loss']}; stopping and keeping the last good checkpoint")
            break
        improved = row["val_accuracy"] > record["best_val_accuracy"]
        record = {
            "epoch": epoch,
            "best_val_accuracy": max(row["val_accuracy"], record["best_val_accuracy"]),
            "best_epoch": epoch if improved else record["best_epoch"],
            "epochs_without_improvement": 0 if improved else record["epochs_without_improvement"] + 1,
            "history": record["history"] + [row],
        }
        if improved:
            checkpoints.save("best", epoch, state, record)
        checkpoints.save("latest", epoch, state, record)
        write_jsonl(run_dir / "metrics.jsonl", record["history"])
        plotting.plot_curves(record["history"], run_dir / "curves.png")
        print(f"Epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
              f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}{' (best)' if improved else ''} | "
              f"{row['seconds']:.1f}s")
        if _patience_exhausted(config, record):
            stop_reason = "early_stopping"
            print(f"Early stopping: no better PublicTest accuracy in {config.train.patience} epochs")
            break

    if not checkpoints.has("best"):
        checkpoints.close()
        raise TrainingError(f"{run_dir}: no epoch finished with a finite loss, so there is no checkpoint to evaluate")
    results = evaluate_checkpoint(config, state, steps, checkpoints, splits)
    checkpoints.close()
    results.update(stop_reason=stop_reason, command=environment_info()["command"])
    write_json(run_dir / "results.json", results)
    if results_copy:
        write_json(results_copy, results)
    return results


def _patience_exhausted(config: Config, record: dict[str, Any]) -> bool:
    return bool(config.train.patience) and record["epochs_without_improvement"] >= config.train.patience


def _train_epoch(state: TrainState, steps: Steps, split: fer_data.Split, config: Config,
                 epoch: int) -> tuple[TrainState, dict[str, float]]:
    batches = fer_data.train_batches(split, config.data, config.train.batch_size, config.train.seed, epoch)
    total = len(split) // config.train.batch_size
    sums = {"loss": jnp.zeros(()), "correct": jnp.zeros((), jnp.int32)}
    count = 0
    with tqdm(batches, total=total, desc=f"Epoch {epoch}/{config.train.epochs}", leave=False,
              dynamic_ncols=True, mininterval=1.0) as bar:
        for index, (images, labels) in enumerate(bar):
            state, out = steps.train(state, images, labels)
            sums = {name: sums[name] + out[name] for name in sums}
            count += len(labels)
            if index % 20 == 0:
                bar.set_postfix(loss=f"{float(sums['loss']) / count:.3f}", acc=f"{int(sums['correct']) / count:.3f}")
    return state, {"loss": float(sums["loss"]) / count, "accuracy": int(sums["correct"]) / count}
