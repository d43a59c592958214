"""The JAX trainer: jit-compiled Optax steps in the shared epoch loop, Orbax checkpoints.

`train(config)` runs (or resumes) a run in `config.run_dir` and leaves there:
config.json, environment.json, metrics.jsonl, checkpoints/{latest,best}/,
curves.png, confusion_matrix.png and results.json (PrivateTest accuracy of the
checkpoint that PublicTest selected).

The protocol is enforced, not left to care: the epochs get only Training and
PublicTest (`evaluation.selection_splits`); PrivateTest is taken out of the
dataset (`evaluation.reported_split`) after the last epoch, for the one
evaluation of the selected checkpoint. With `train.ema_decay`, the EMA weights
are validated, saved as 'best' and reported (`steps.selected_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from fer_jax.config import Config, ConfigError, ProcessConfig
from fer_jax.data import fer2013 as fer_data
from fer_jax.data.check import check_for_run
from fer_jax.models.zoo import count_params
from fer_jax.train import distributed, loop, parallel
from fer_jax.train.checkpoints import RunCheckpoints, holds_checkpoints
from fer_jax.train.evaluation import (
    REPORTED_SPLIT,
    evaluate_checkpoint,
    evaluate_split,
    load_dataset,
    reported_split,
    running_sums,
    selection_splits,
)
from fer_jax.train.loop import TrainingError
from fer_jax.train.steps import Steps, TrainState, init_state, selected_weights, steps_per_dispatch
from fer_jax.train.tensorboard_log import StepTrace

__all__ = ["TrainingError", "train"]


def train(
    config: Config, resume: bool = False, results_copy: str | None = None, launch: ProcessConfig | None = None
) -> dict[str, Any]:
    """Train (or with `resume`, continue) the run in `config.run_dir`; return its results. With
    `train.distributed`, as one process of a multi-process run (`launch`: which one; see `distributed`). The
    config is validated first (a one-line ConfigError before anything is read or written)."""
    config.validate()
    with distributed.process_group(config, launch):
        return _train(config, resume, results_copy)


def _train(config: Config, resume: bool, results_copy: str | None) -> dict[str, Any]:
    config.run_dir = distributed.shared_string(config.run_dir)  # a default one is named after process 0's clock
    run_dir = Path(config.run_dir)
    trace = StepTrace(run_dir, config.train.profile_steps, "jax")
    loop.check_new_run(run_dir, holds_checkpoints(run_dir), resume)
    distributed.barrier("checked-new-run")  # before process 0 writes into the folder
    dataset = load_dataset(config)
    if distributed.is_writer():
        check_for_run(dataset, run_dir, config.data.cache_dir)
    splits = selection_splits(config, dataset)
    state, steps = init_state(config, loop.steps_per_epoch(config, splits["Training"]))
    checkpoints = RunCheckpoints(run_dir, ema=config.train.ema_decay > 0)
    record = loop.new_record()
    resumed = checkpoints.resume(state, loop.finished_epochs(run_dir)) if resume else None
    if resumed:
        state, record = resumed
        print(f"Resuming {run_dir} after epoch {record['epoch']}")
    images_per_epoch = loop.steps_per_epoch(config, splits["Training"]) * config.train.batch_size
    board = loop.start_run(config, record, "jax", images_per_epoch)
    print(
        f"Run folder {run_dir} | {config.model.name}: {count_params(state.params):,} parameters | "
        f"train {len(splits['Training'])}, val {len(splits['PublicTest'])} images (PrivateTest unread until the "
        f"end) | {steps.mesh.size} {jax.devices()[0].platform} device(s), {config.data.pipeline} pipeline"
    )

    updates = traced(epoch_updates(config, steps, splits["Training"]), trace, config.train.batch_size)

    def train_epoch(epoch: int) -> dict[str, float]:
        nonlocal state
        state, metrics = _train_epoch(state, updates, config, epoch, images_per_epoch)
        return distributed.same_everywhere(metrics)

    hooks = loop.EpochHooks(
        train_epoch=train_epoch,
        validate=lambda: distributed.same_everywhere(
            _loss_and_accuracy(
                evaluate_split(selected_weights(state), steps, splits["PublicTest"], config.train.eval_batch_size)
            )
        ),
        learning_rate=lambda epoch: float(steps.learning_rate(state.step)),
        save=lambda which, epoch, record: checkpoints.save(
            which, epoch, selected_weights(state) if which == "best" else state, record
        ),
    )
    try:
        record, stop_reason = loop.run_epochs(config, record, hooks, board)
        trace.close(state)
        if not checkpoints.has("best"):
            raise TrainingError(
                f"{run_dir}: no epoch finished with a finite loss, so there is no checkpoint to evaluate"
            )
        splits[REPORTED_SPLIT] = reported_split(config, dataset)
        results = evaluate_checkpoint(config, state, steps, checkpoints, splits)
    except BaseException:
        trace.close()
        board.close()
        raise
    finally:
        checkpoints.close()
    return loop.finish_run(config, results, stop_reason, "jax", results_copy, board)


def _loss_and_accuracy(metrics: dict[str, Any]) -> dict[str, float]:
    return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}


EpochUpdates = Callable[[TrainState, int], Iterator[tuple[TrainState, dict[str, jax.Array], int]]]


def traced(updates: EpochUpdates, trace: StepTrace, batch_size: int) -> EpochUpdates:
    """`updates` that tell `trace` of every step once it has been consumed (the profiler's window)."""

    def run(state: TrainState, epoch: int):
        for state, out, images in updates(state, epoch):  # noqa: B020 (each step yields the new state)
            yield state, out, images
            trace.step(out, images // batch_size)

    return run


def _train_epoch(
    state: TrainState, updates: EpochUpdates, config: Config, epoch: int, images_per_epoch: int
) -> tuple[TrainState, dict[str, float]]:
    """One epoch of `updates`, with a progress bar; the mean loss and accuracy on its augmented batches."""
    sums = None
    count = 0
    with tqdm(
        total=images_per_epoch,
        unit="img",
        desc=f"Epoch {epoch}/{config.train.epochs}",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    ) as bar:
        for state, out, images in updates(state, epoch):  # noqa: B007, B020 (each step yields the new state)
            sums = running_sums(sums, {name: out[name] for name in ("loss", "correct")})
            count += images
            bar.update(images)
            if bar.n % (20 * config.train.batch_size) < images:
                bar.set_postfix(loss=f"{float(sums['loss']) / count:.3f}", acc=f"{int(sums['correct']) / count:.3f}")
    return state, {"loss": float(sums["loss"]) / count, "accuracy": int(sums["correct"]) / count}


def epoch_updates(config: Config, steps: Steps, split: fer_data.Split) -> EpochUpdates:
    """The train steps of an epoch through `data.pipeline`: yields (state, summed metrics, images) as they run.

    'torchvision' (the reference): DataLoader batches augmented by torchvision,
    one jitted step each. 'device': the uint8 split copied once onto the
    devices; each call runs `train.steps_per_dispatch` steps that gather and
    augment their batches on the device. Either way the batch order and
    augmentation depend only on (seed, epoch), so a resumed epoch replays.
    """
    batch = config.train.batch_size
    if config.data.pipeline == "torchvision":

        def host_updates(state: TrainState, epoch: int):
            for images, labels in fer_data.train_batches(split, config.data, batch, config.train.seed, epoch):
                state, out = steps.train(state, images, labels)
                yield state, out, batch

        return host_updates
    if config.data.pipeline != "device":
        raise ConfigError(f"unknown data.pipeline {config.data.pipeline!r}: expected 'torchvision' or 'device'")
    images = parallel.replicate(steps.mesh, fer_data.to_jax(split.images))
    labels = parallel.replicate(steps.mesh, fer_data.to_jax(split.labels).astype(jnp.int32))
    per_call = steps_per_dispatch(config)

    def device_updates(state: TrainState, epoch: int):
        count = len(split) // batch
        order_key = jax.random.fold_in(jax.random.key(config.train.seed), epoch)
        order = jax.random.permutation(order_key, len(split))[: count * batch].reshape(count, batch)
        for start in range(0, count, per_call):
            (indices,) = parallel.shard_batch(steps.mesh, order[start : start + per_call], axis=1)
            state, out = steps.train_chunk(state, images, labels, indices)
            yield state, out, indices.size

    return device_updates
