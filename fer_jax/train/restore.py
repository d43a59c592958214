"""A run folder's weights for evaluation and inference: its config and a checkpoint's parameters and BatchNorm
statistics, restored without an optimizer, a schedule or a train step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from flax import nnx

from fer_jax.config import Config, ModelConfig
from fer_jax.models.zoo import model_skeleton
from fer_jax.train.checkpoints import RunCheckpoints, holds_checkpoints

Weights = dict[str, nnx.State]


def run_config(run_dir: str | Path) -> Config:
    """A run folder's config.json, with `run_dir` pointing at the folder (wherever it now is)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json here; is this a run folder made by `fer-jax train`?")
    config = Config.load(run_dir / "config.json")
    config.run_dir = str(run_dir)
    return config


def abstract_weights(model: ModelConfig, sharding: jax.sharding.Sharding | None = None) -> Weights:
    """The shapes and dtypes of a model's {'params', 'model_state'}: what a checkpoint's weights restore into, placed
    with `sharding` (e.g. replicated over a run's mesh) when given."""
    _, params, model_state = nnx.split(model_skeleton(model), nnx.Param, ...)
    weights = {"params": params, "model_state": model_state}
    if sharding is None:
        return weights
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), weights)


def restore_weights(run_dir: str | Path, which: str = "best") -> tuple[Config, Weights, dict[str, Any]]:
    """A run's config, the weights of its `which` checkpoint ('best' or 'latest': the EMA weights when the run
    kept them) and the checkpoint's record. The checkpoint is verified against its checksums, with the fallbacks
    of `RunCheckpoints.restore_weights`; `CheckpointError` when none is readable."""
    config = run_config(run_dir)
    if not holds_checkpoints(run_dir):
        raise FileNotFoundError(f"{run_dir}: no checkpoint yet (has an epoch finished?)")
    checkpoints = RunCheckpoints(run_dir, ema=bool(config.train.ema_decay))
    try:
        weights, record = checkpoints.restore_weights(which, abstract_weights(config.model))
    finally:
        checkpoints.close()
    return config, weights, record
