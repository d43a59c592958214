"""The JAX trainer: jit-compiled Optax steps in the shared epoch loop, Orbax checkpoints.

`train(config)` runs (or resumes) a run in `config.run_dir` and leaves there:
config.json, environment.json, metrics.jsonl, checkpoints/{latest,best}/,
curves.png, confusion_matrix.png and results.json (PrivateTest accuracy of the
checkpoint that PublicTest selected).

The protocol is enforced, not left to care: the epochs get only Training and
PublicTest (`evaluation.selection_splits`); PrivateTest is taken out of the
dataset (`evaluation.reported_split`) after the last epoch, for the one
evaluation of the selected checkpoint. With `train.ema_decay`, the EMA weights
are validated, saved as 'best' and reported (`state.selected_weights`).
"""

from __future__ import annotations

import functools
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
from fer_jax.train import distributed, keys, loop, parallel
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
from fer_jax.train.state import TrainState, as_saved, create_state, from_saved, selected_weights
from fer_jax.train.steps import Steps, build_steps, steps_per_dispatch
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


LOG_EVERY_STEPS = 20
"""The progress bar shows the running loss and accuracy about every this many train steps: the only reads of
the metrics during an epoch, and each one a dispatch behind, so the device always has work queued."""


def _train(config: Config, resume: bool, results_copy: str | None) -> dict[str, Any]:
    config.run_dir = distributed.shared_string(config.run_dir)  # a default one is named after process 0's clock
    run_dir = Path(config.run_dir)
    loop.check_new_run(run_dir, holds_checkpoints(run_dir), resume)
    distributed.barrier("checked-new-run")  # before process 0 writes into the folder
    dataset = load_dataset(config)
    if distributed.is_writer():
        check_for_run(dataset, run_dir, config.data.cache_dir)
    splits = selection_splits(config, dataset)
    steps_per_epoch = loop.steps_per_epoch(config, splits["Training"])
    steps = build_steps(config, steps_per_epoch)
    checkpoints = RunCheckpoints(run_dir, ema=bool(config.train.ema_decay))
    state, record = _start_state(config, steps, checkpoints, resume)
    board = loop.start_run(config, record, "jax", steps_per_epoch * config.train.batch_size)
    print(
        f"Run folder {run_dir} | {config.model.name}: {count_params(state.params):,} parameters | "
        f"train {len(splits['Training'])}, val {len(splits['PublicTest'])} images (PrivateTest unread until the "
        f"end) | {steps.mesh.size} {jax.devices()[0].platform} device(s), {config.data.pipeline} pipeline"
    )
    trace = StepTrace(run_dir, config.train.profile_steps, "jax")
    try:
        run = _EpochRun(
            config,
            steps,
            splits,
            state,
            checkpoints,
            traced(epoch_updates(config, steps, splits["Training"]), trace, config.train.batch_size),
            steps_per_epoch * config.train.batch_size,
        )
        record, stop_reason = loop.run_epochs(config, record, run.hooks(), board)
        trace.close(run.state)
        if not checkpoints.has("best"):
            raise TrainingError(
                f"{run_dir}: no epoch finished with a finite loss, so there is no checkpoint to evaluate"
            )
        splits[REPORTED_SPLIT] = reported_split(config, dataset)
        results = evaluate_checkpoint(config, checkpoints, splits)
    except BaseException as err:  # close what is open, reporting `err` and not a cleanup's error after it
        distributed.close_after_failure(err, trace.close, board and board.close, checkpoints.close)
        raise
    checkpoints.close()
    return loop.finish_run(config, results, stop_reason, "jax", results_copy, board)


def _start_state(
    config: Config, steps: Steps, checkpoints: RunCheckpoints, resume: bool
) -> tuple[TrainState, dict[str, Any]]:
    """Seed `train.seed`'s fresh state and an empty record, or with `resume` the checkpoint the run continues
    from."""
    state = create_state(config, keys.root_key(config.train.seed), steps.tx, steps.mesh)
    record = loop.new_record()
    resumed = checkpoints.resume(as_saved(state), loop.finished_epochs(Path(config.run_dir))) if resume else None
    if resumed:
        saved, record = resumed
        state = from_saved(saved, state.key)
        print(f"Resuming {config.run_dir} after epoch {record['epoch']}")
    return state, record


class _EpochRun:
    """The state of a run between epochs, and the `loop.EpochHooks` that train, validate and save it."""

    def __init__(
        self,
        config: Config,
        steps: Steps,
        splits: dict[str, fer_data.Split],
        state: TrainState,
        checkpoints: RunCheckpoints,
        updates: EpochUpdates,
        images_per_epoch: int,
    ) -> None:
        self.config, self.steps, self.splits, self.state, self.checkpoints = config, steps, splits, state, checkpoints
        self.updates, self.images_per_epoch = updates, images_per_epoch

    def hooks(self) -> loop.EpochHooks:
        return loop.EpochHooks(
            train_epoch=self.train_epoch,
            validate=self.validate,
            learning_rate=lambda epoch: float(self.steps.learning_rate(self.state.step)),
            save=self.save,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.state, metrics = _train_epoch(self.state, self.updates, self.config, epoch, self.images_per_epoch)
        return distributed.same_everywhere(metrics)

    def validate(self) -> dict[str, Any]:
        weights = selected_weights(self.state).weights
        metrics = evaluate_split(weights, self.steps.eval, self.splits["PublicTest"], self.config.train.eval_batch_size)
        return distributed.same_everywhere({"loss": metrics["loss"], "accuracy": metrics["accuracy"]})

    def save(self, which: str, epoch: int, record: dict[str, Any]) -> None:
        state = selected_weights(self.state) if which == "best" else self.state
        self.checkpoints.save(which, epoch, as_saved(state), record)


EpochUpdates = Callable[[TrainState, int], Iterator[tuple[TrainState, dict[str, jax.Array], int]]]


def traced(updates: EpochUpdates, trace: StepTrace, batch_size: int) -> EpochUpdates:
    """`updates` that tell `trace` of every step once it has been consumed (the profiler's window)."""

    def run(state: TrainState, epoch: int):
        for state, out, images in updates(state, epoch):  # noqa: B020 (each step yields the new state)
            yield state, out, images
            trace.step(out, images // batch_size)

    return run


def read_metrics(sums: dict[str, jax.Array], count: int) -> dict[str, float]:
    """The mean loss and accuracy of `count` images from their summed metrics: a host read, which waits for the
    dispatches that computed them."""
    return {"loss": float(sums["loss"]) / count, "accuracy": int(sums["correct"]) / count}


def _train_epoch(
    state: TrainState, updates: EpochUpdates, config: Config, epoch: int, images_per_epoch: int
) -> tuple[TrainState, dict[str, float]]:
    """One epoch of `updates`, with a progress bar; the mean loss and accuracy on its augmented batches.

    The metrics stay on the device, summed there, and are read every `LOG_EVERY_STEPS` steps (at least every
    second dispatch) for the bar, one dispatch behind, and once at the end of the epoch."""
    sums, count, dispatches = None, 0, 0
    log_every = max(2, -(-LOG_EVERY_STEPS * config.train.batch_size // max(1, images_per_dispatch(config))))
    bar = tqdm(
        total=images_per_epoch,
        unit="img",
        desc=f"Epoch {epoch}/{config.train.epochs}",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    with bar:
        for state, out, images in updates(state, epoch):  # noqa: B007, B020 (each step yields the new state)
            if dispatches and dispatches % log_every == 0:  # the sums before this dispatch, which is queued
                shown = read_metrics(sums, count)
                bar.set_postfix(loss=f"{shown['loss']:.3f}", acc=f"{shown['accuracy']:.3f}")
            sums = running_sums(sums, {name: out[name] for name in ("loss", "correct")})
            count += images
            dispatches += 1
            bar.update(images)
    return state, read_metrics(sums, count)


def images_per_dispatch(config: Config) -> int:
    """Images one call of the train step covers: a batch, or `steps_per_dispatch` batches on the device pipeline."""
    per_call = steps_per_dispatch(config) if config.data.pipeline == "device" else 1
    return per_call * config.train.batch_size


def epoch_updates(config: Config, steps: Steps, split: fer_data.Split) -> EpochUpdates:
    """The train steps of an epoch through `data.pipeline`: yields (state, summed metrics, images) as they run.

    'torchvision' (the reference): DataLoader batches augmented by torchvision, one jitted step each, in the
    order and augmentation of torch's generator for (seed, epoch), as the PyTorch baseline draws them.
    'device': the uint8 split copied once onto the devices; each call runs `train.steps_per_dispatch` steps
    that gather and augment their batches on the device, in the order of the state key's 'shuffle' stream.
    Either way the batch order and augmentation depend only on (seed, epoch), so a resumed epoch replays.
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
        # The key's copy on this process's first device: a multi-process mesh's state is not addressable whole.
        order = _epoch_order(state.key.addressable_data(0), epoch, len(split))[: count * batch].reshape(count, batch)
        for start in range(0, count, per_call):
            (indices,) = parallel.shard_batch(steps.mesh, order[start : start + per_call], axis=1)
            state, out = steps.train_chunk(state, images, labels, indices)
            yield state, out, indices.size

    return device_updates


@functools.partial(jax.jit, static_argnums=2)
def _epoch_order(root: jax.Array, epoch: int, size: int) -> jax.Array:
    """The device pipeline's order of the training images in an epoch: the 'shuffle' stream's permutation."""
    return jax.random.permutation(keys.step_key(root, "shuffle", epoch), size)
