"""Evaluation of a run's PublicTest-selected checkpoint on PrivateTest, the number the literature reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fer_jax import data as fer_data
from fer_jax import plotting
from fer_jax.checkpoints import RunCheckpoints
from fer_jax.config import Config
from fer_jax.environment import environment_info
from fer_jax.files import read_jsonl
from fer_jax.models import count_params
from fer_jax.steps import Steps, TrainState, init_state


def evaluate_split(state: TrainState, steps: Steps, split: fer_data.Split, batch_size: int) -> dict[str, Any]:
    """Mean loss, accuracy and per-image predictions on an unaugmented split."""
    loss, correct, count = 0.0, 0, 0
    predictions = []
    for images, labels, mask in fer_data.eval_batches(split, batch_size):
        out = steps.eval(state, images, labels, mask)
        loss, correct, count = loss + out["loss"], correct + out["correct"], count + out["count"]
        predictions.append(out["predictions"])
    count = int(count)
    return {
        "loss": float(loss) / count,
        "accuracy": int(correct) / count,
        "predictions": jnp.concatenate(predictions)[:count],
    }


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int = len(fer_data.EMOTIONS)) -> jax.Array:
    """Counts: row = true class, column = predicted class."""
    flat = jnp.asarray(labels) * num_classes + jnp.asarray(predictions)
    return jnp.bincount(flat, length=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_checkpoint(config: Config, state: TrainState, steps: Steps, checkpoints: RunCheckpoints,
                        splits: dict[str, fer_data.Split]) -> dict[str, Any]:
    """Restore the best checkpoint, evaluate it on PublicTest and PrivateTest, plot its confusion matrix."""
    best_state, record = checkpoints.restore("best", state)
    val = evaluate_split(best_state, steps, splits["PublicTest"], config.train.eval_batch_size)
    test = evaluate_split(best_state, steps, splits["PrivateTest"], config.train.eval_batch_size)
    matrix = confusion_matrix(splits["PrivateTest"].labels.tolist(), test["predictions"])
    run_dir = Path(config.run_dir)
    plotting.plot_confusion_matrix(matrix.tolist(), run_dir / "confusion_matrix.png",
                                   title=f"PrivateTest, best checkpoint (epoch {record['best_epoch']})")
    print(f"Best epoch {record['best_epoch']}: PublicTest accuracy {val['accuracy']:.4f}, "
          f"PrivateTest accuracy {test['accuracy']:.4f}")
    seconds = [row["seconds"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    env = environment_info()
    return {
        "model": config.model.name,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "selected_on": "PublicTest",
        "reported_on": "PrivateTest",
        "best_epoch": record["best_epoch"],
        "epochs": len(seconds),
        "seconds_per_epoch": sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else seconds[0],
        "first_epoch_seconds": seconds[0],
        "train_images": len(splits["Training"]),
        "val_images": len(splits["PublicTest"]),
        "test_images": len(splits["PrivateTest"]),
        "parameters": count_params(best_state.params),
        "confusion_matrix": matrix.tolist(),
        "device": env["device"],
        "git_commit": env["git_commit"],
        "run_dir": str(run_dir),
    }


def evaluate_run(run_dir: str | Path, data_source: str | None = None) -> dict[str, Any]:
    """Re-evaluate a finished (or interrupted) run from its config.json and best checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json here; is this a run folder made by `fer-jax train`?")
    config = Config.load(run_dir / "config.json")
    config.run_dir = str(run_dir)
    if data_source:
        config.data.source = data_source
    splits = load_splits(config)
    state, steps = init_state(config, max(1, len(splits["Training"]) // config.train.batch_size))
    checkpoints = RunCheckpoints(run_dir)
    try:
        if not checkpoints.has("best"):
            raise FileNotFoundError(f"{run_dir}: no best checkpoint yet (has an epoch finished?)")
        return evaluate_checkpoint(config, state, steps, checkpoints, splits)
    finally:
        checkpoints.close()


def load_splits(config: Config) -> dict[str, fer_data.Split]:
    """The three splits a config trains, selects and reports on (subsets for quick runs)."""
    dataset = fer_data.load_fer2013(config.data.resolved_source(), config.data.cache_dir)
    return {
        "Training": dataset["Training"].subset(config.data.train_limit, seed=config.train.seed),
        "PublicTest": dataset["PublicTest"].subset(config.data.eval_limit),
        "PrivateTest": dataset["PrivateTest"].subset(config.data.eval_limit),
    }
