"""Evaluation of a run's PublicTest-selected checkpoint on PrivateTest, the number the literature reports.

The protocol is enforced here: `selection_splits` (Training, PublicTest) is all
the trainer gets; `reported_split` (PrivateTest) is taken out of the dataset
only by the final evaluation of the one selected checkpoint, after the epochs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fer_jax.config import Config, ConfigError
from fer_jax.data import fer2013 as fer_data
from fer_jax.data.cache import cache_root, content_folder
from fer_jax.data.views import View, mirror, view_list
from fer_jax.environment import device_description
from fer_jax.models.zoo import count_params
from fer_jax.train import parallel
from fer_jax.train.checkpoints import RunCheckpoints, holds_checkpoints
from fer_jax.train.eval_step import EvalStep, Weights, build_eval_step
from fer_jax.train.loop import summarize
from fer_jax.train.restore import abstract_weights, run_config

SELECTION_SPLITS = ("Training", "PublicTest")
"""The splits training and checkpoint selection may read."""
REPORTED_SPLIT = "PrivateTest"
"""The split only the final evaluation of the selected checkpoint reads."""
TTA = "flip"
"""Test-time augmentation reported beside the plain numbers: softmax averaged over each face and its mirror image."""


def evaluate_split(weights: Weights, eval_step: EvalStep, split: fer_data.Split, batch_size: int) -> dict[str, Any]:
    """Mean loss, accuracy and per-image predictions of `weights` on an unaugmented split."""
    sums = None
    predictions, logits = [], []
    for images, labels, mask in fer_data.eval_batches(split, batch_size):
        out = eval_step(weights, images, labels, mask)
        sums = running_sums(sums, {name: out[name] for name in ("loss", "correct", "count")})
        predictions.append(out["predictions"])
        logits.append(out["logits"])
    count = int(sums["count"])
    return {
        "loss": float(sums["loss"]) / count,
        "accuracy": int(sums["correct"]) / count,
        "predictions": jnp.concatenate(predictions)[:count],
        "logits": jnp.concatenate(logits)[:count],
    }


def running_sums(sums: dict[str, jax.Array] | None, step: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`sums` + `step`, leaf by leaf (`step` itself for the first step): running sums of step metrics, on the
    device and without a sync, in one compiled program."""
    return step if sums is None else _added(sums, step)


@jax.jit
def _added(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(jnp.add, a, b)


@jax.jit
def averaged_probabilities(logits_per_view: Sequence[jax.Array]) -> jax.Array:
    """Softmax probabilities averaged over views (each (N, 7) logits of the same faces): test-time augmentation.
    Jitted, as the small helpers below: one compilation instead of one per operation in a new process."""
    return jnp.mean(jnp.stack([jax.nn.softmax(logits) for logits in logits_per_view]), axis=0)


@jax.jit
def _averaged_hits(logits_per_view: Sequence[jax.Array], labels: jax.Array) -> jax.Array:
    return jnp.sum(jnp.argmax(averaged_probabilities(logits_per_view), -1) == labels)


def averaged_accuracy(logits_per_view: Sequence[jax.Array], labels: jax.Array) -> float:
    """Accuracy of `averaged_probabilities`."""
    return int(_averaged_hits(list(logits_per_view), jnp.asarray(labels))) / len(labels)


def flip_tta_accuracy(
    weights: Weights, eval_step: EvalStep, split: fer_data.Split, batch_size: int, plain_logits: jax.Array
) -> float:
    """Accuracy with `TTA` ('flip'), given the split's plain logits (from `evaluate_split`)."""
    mirrored = split_logits(weights, eval_step, split, batch_size, jax.jit(mirror))
    return averaged_accuracy([plain_logits, mirrored], fer_data.to_jax(split.labels))


def tta_views(crops: bool) -> dict[str, list[View]]:
    """The jitted views of each TTA variant ('flip', and 'crops' if asked): `fer_jax.data.views`' sets."""

    def jitted(tta: str) -> list[View]:
        return [None if view is None else jax.jit(view) for view in view_list(tta)]

    return {"flip": jitted("flip"), **({"crops": jitted("crops")} if crops else {})}


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int = len(fer_data.EMOTIONS)) -> jax.Array:
    """Counts: row = true class, column = predicted class."""
    return _confusion_counts(jnp.asarray(labels), jnp.asarray(predictions), num_classes)


@functools.partial(jax.jit, static_argnums=2)
def _confusion_counts(labels: jax.Array, predictions: jax.Array, num_classes: int) -> jax.Array:
    flat = labels * num_classes + predictions
    return jnp.bincount(flat, length=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_checkpoint(
    config: Config, checkpoints: RunCheckpoints, splits: dict[str, fer_data.Split]
) -> dict[str, Any]:
    """Restore the best checkpoint's weights and evaluate them on PublicTest and PrivateTest (`loop.summarize`'s
    keys), without and with flip TTA. The best checkpoint holds the selected weights (EMA ones if EMA was on)."""
    mesh = parallel.make_mesh(config.train.devices)  # the run's: a multi-process run restores onto all processes
    best, record = checkpoints.restore_weights("best", abstract_weights(config.model, parallel.replicated(mesh)))
    eval_step = build_eval_step(config.model, config.train.devices)
    batch_size = config.train.eval_batch_size
    val = evaluate_split(best, eval_step, splits["PublicTest"], batch_size)
    test = evaluate_split(best, eval_step, splits[REPORTED_SPLIT], batch_size)
    tta = {
        "val": flip_tta_accuracy(best, eval_step, splits["PublicTest"], batch_size, val["logits"]),
        "test": flip_tta_accuracy(best, eval_step, splits[REPORTED_SPLIT], batch_size, test["logits"]),
    }
    matrix = confusion_matrix(splits[REPORTED_SPLIT].labels.tolist(), test["predictions"]).tolist()
    results = summarize(
        config,
        record["best_epoch"],
        val,
        test,
        splits,
        count_params(best["params"]),
        device_description(),
        matrix,
        tta,
    )
    if config.train.crops_tta:
        views = tta_views(crops=True)["crops"]
        for key, split in (("val", splits["PublicTest"]), ("test", splits[REPORTED_SPLIT])):
            logits = [split_logits(best, eval_step, split, batch_size, view) for view in views]
            results[f"{key}_accuracy_crops"] = averaged_accuracy(logits, fer_data.to_jax(split.labels))
        results["crops_views"] = len(views)
    return results


def evaluate_run(run_dir: str | Path, data_source: str | None = None) -> dict[str, Any]:
    """Re-evaluate a finished (or interrupted) run from its config.json and best checkpoint."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    if not holds_checkpoints(run_dir):
        raise FileNotFoundError(f"{run_dir}: no checkpoint yet (has an epoch finished?)")
    if data_source:
        config.data.source = data_source
    splits = load_splits(config)
    checkpoints = RunCheckpoints(run_dir, ema=bool(config.train.ema_decay))
    try:
        return evaluate_checkpoint(config, checkpoints, splits)
    finally:
        checkpoints.close()


def load_dataset(config: Config) -> fer_data.FER2013:
    """FER-2013 through `data.loader`, all three splits decoded (hand out splits with the functions below)."""
    if config.data.loader == "tfds":
        from fer_jax.data.tfds_builder import load_tfds_splits  # optional dependency: tensorflow-datasets

        source = Path(config.data.resolved_source())
        tfds_dir = config.data.tfds_dir or (
            content_folder(source, config.data.cache_dir) / "tfds"
            if source.is_file()
            else cache_root(config.data.cache_dir) / "tfds" / source.name
        )
        splits = load_tfds_splits(tfds_dir, source, config.data.cache_dir)
        return fer_data.FER2013(splits, str(tfds_dir), str(source) if source.is_file() else None)
    if config.data.loader == "torchvision":
        return fer_data.load_fer2013(config.data.resolved_source(), config.data.cache_dir)
    raise ConfigError(f"data.loader must be 'torchvision' or 'tfds', got {config.data.loader!r}")


def selection_splits(config: Config, dataset: fer_data.FER2013) -> dict[str, fer_data.Split]:
    """Training and PublicTest (subsets for quick runs): everything training and checkpoint selection see."""
    return {
        "Training": dataset["Training"].subset(config.data.train_limit, seed=config.train.seed),
        "PublicTest": dataset["PublicTest"].subset(config.data.eval_limit),
    }


def reported_split(config: Config, dataset: fer_data.FER2013) -> fer_data.Split:
    """PrivateTest (a subset for quick runs). The trainer calls this once, after the last epoch."""
    return dataset[REPORTED_SPLIT].subset(config.data.eval_limit)


def load_splits(config: Config, dataset: fer_data.FER2013 | None = None) -> dict[str, fer_data.Split]:
    """The three splits a config trains, selects and reports on (of `dataset`, else loaded), for evaluating runs."""
    dataset = dataset or load_dataset(config)
    return {**selection_splits(config, dataset), REPORTED_SPLIT: reported_split(config, dataset)}


def split_logits(
    weights: Weights,
    eval_step: EvalStep,
    split: fer_data.Split,
    batch_size: int,
    view: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Logits (N, 7) of every face of a split, each batch passed through `view` first if given (test-time
    augmentation)."""
    logits = []
    for images, labels, mask in fer_data.eval_batches(split, batch_size):
        logits.append(eval_step(weights, images if view is None else view(images), labels, mask)["logits"])
    return jnp.concatenate(logits)[: len(split)]
