"""The JAX trainer: jit-compiled Optax steps in the shared epoch loop, Orbax checkpoints.

`train(config)` runs (or resumes) a run in `config.run_dir` and leaves there:
config.json, environment.json, metrics.jsonl, checkpoints/{latest,best}/,
curves.png, confusion_matrix.png and results.json (PrivateTest accuracy of the
checkpoint that PublicTest selected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from fer_jax import data as fer_data
from fer_jax import loop
from fer_jax.checkpoints import RunCheckpoints
from fer_jax.config import Config
from fer_jax.evaluation import evaluate_checkpoint, evaluate_split, load_splits
from fer_jax.loop import TrainingError
from fer_jax.models import count_params
from fer_jax.steps import Steps, TrainState, init_state

__all__ = ["TrainingError", "train"]


def train(config: Config, resume: bool = False, results_copy: str | None = None) -> dict[str, Any]:
    """Train (or with `resume`, continue) the run in `config.run_dir`; return its results."""
    run_dir = Path(config.run_dir)
    loop.check_new_run(run_dir, run_dir.joinpath("checkpoints", "latest").is_dir(), resume)
    splits = load_splits(config)
    state, steps = init_state(config, loop.steps_per_epoch(config, splits["Training"]))
    checkpoints = RunCheckpoints(run_dir)
    record = loop.new_record()
    if resume and checkpoints.has("latest"):
        state, record = checkpoints.restore("latest", state)
        print(f"Resuming {run_dir} after epoch {record['epoch']}")
    elif resume:
        print(f"{run_dir} has no checkpoint yet (stopped during epoch 1); starting it from the beginning")
    loop.start_run(config, record)
    print(f"Run folder {run_dir} | {config.model.name}: {count_params(state.params):,} parameters | "
          f"train {len(splits['Training'])}, val {len(splits['PublicTest'])}, test {len(splits['PrivateTest'])} "
          f"images | {jax.devices()[0].platform}")

    def train_epoch(epoch: int) -> dict[str, float]:
        nonlocal state
        state, metrics = _train_epoch(state, steps, splits["Training"], config, epoch)
        return metrics

    hooks = loop.EpochHooks(
        train_epoch=train_epoch,
        validate=lambda: evaluate_split(state, steps, splits["PublicTest"], config.train.eval_batch_size),
        learning_rate=lambda epoch: float(steps.learning_rate(state.step)),
        save=lambda which, epoch, record: checkpoints.save(which, epoch, state, record),
    )
    try:
        record, stop_reason = loop.run_epochs(config, record, hooks)
        if not checkpoints.has("best"):
            raise TrainingError(f"{run_dir}: no epoch finished with a finite loss, so there is no checkpoint to evaluate")
        results = evaluate_checkpoint(config, state, steps, checkpoints, splits)
    finally:
        checkpoints.close()
    return loop.finish_run(config, results, stop_reason, "jax", results_copy)


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
