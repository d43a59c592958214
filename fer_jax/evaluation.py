"""Evaluation of a run's PublicTest-selected checkpoint on PrivateTest, the number the literature reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fer_jax import data as fer_data
from fer_jax.checkpoints import RunCheckpoints
from fer_jax.config import Config, ConfigError
from fer_jax.environment import device_description
from fer_jax.loop import summarize
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
    """Restore the best checkpoint and evaluate it on PublicTest and PrivateTest (`loop.summarize`'s keys)."""
    best_state, record = checkpoints.restore("best", state)
    val = evaluate_split(best_state, steps, splits["PublicTest"], config.train.eval_batch_size)
    test = evaluate_split(best_state, steps, splits["PrivateTest"], config.train.eval_batch_size)
    matrix = confusion_matrix(splits["PrivateTest"].labels.tolist(), test["predictions"]).tolist()
    return summarize(config, record["best_epoch"], val, test, splits, count_params(best_state.params),
                     device_description(), matrix)


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
    if config.data.loader == "tfds":
        from fer_jax.tfds_builder import load_tfds_splits  # optional dependency: tensorflow-datasets

        tfds_dir = config.data.tfds_dir or str(Path(config.data.cache_dir) / "tfds")
        dataset = load_tfds_splits(tfds_dir, config.data.resolved_source(), config.data.cache_dir)
    elif config.data.loader == "torchvision":
        dataset = fer_data.load_fer2013(config.data.resolved_source(), config.data.cache_dir)
    else:
        raise ConfigError(f"data.loader must be 'torchvision' or 'tfds', got {config.data.loader!r}")
    return {
        "Training": dataset["Training"].subset(config.data.train_limit, seed=config.train.seed),
        "PublicTest": dataset["PublicTest"].subset(config.data.eval_limit),
        "PrivateTest": dataset["PrivateTest"].subset(config.data.eval_limit),
    }
