"""The training state: weights, other model state, optimizer state, step and the run's random key.

`create_state` builds it from a config and a root key; the steps that update it
(`fer_jax.train.steps`) are built apart, once per configuration, and take it as an argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fer_jax.config import Config
from fer_jax.models.zoo import create_model
from fer_jax.train import keys, parallel
from fer_jax.train.eval_step import Weights


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes. `key` is the run's root key (raw key data, `keys.root_key`)."""

    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    key: jax.Array

    @property
    def weights(self) -> Weights:
        """The parameters and BatchNorm statistics, as the eval step takes them."""
        return {"params": self.params, "model_state": self.model_state}


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """A `TrainState` that also carries the EMA of {'params', 'model_state'} (`train.ema_decay` > 0).

    A subclass rather than an optional field, so runs without EMA keep their checkpoint format.
    """

    ema: Weights


def selected_weights(state: TrainState) -> TrainState:
    """The state whose `params`/`model_state` are the ones to validate, select, save as 'best' and report:
    the EMA weights when EMA is on, else the trained weights. The pytree structure is unchanged."""
    if not isinstance(state, EmaTrainState):
        return state
    return state.replace(params=state.ema["params"], model_state=state.ema["model_state"])


def as_saved(state: TrainState) -> dict[str, Any]:
    """The state as checkpoints hold it: its fields but the key, which the run's config.json gives back
    (`keys.root_key(train.seed)`). So a checkpoint has the format it had before states carried keys, and runs
    saved then still resume."""
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state) if field.name != "key"}


def from_saved(saved: dict[str, Any], key: jax.Array) -> TrainState:
    """The state a checkpoint's `as_saved` fields and the run's root key make."""
    return (EmaTrainState if "ema" in saved else TrainState)(**saved, key=key)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """The model's train-mode graph definition, its parameters and the rest of its state (BatchNorm)."""
    model.train()
    return nnx.split(model, nnx.Param, ...)


def initial_model(config: Config) -> nnx.Module:
    """The model of `config` with the initial weights of seed `train.seed` (its root key's 'init' stream), as
    `create_state` draws them: the PyTorch baseline starts from these in the comparison's shared-init runs."""
    return create_model(config.model, keys.stream(keys.root_key(config.train.seed), "init"))


def create_state(
    config: Config, key: jax.Array, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> TrainState:
    """Fresh weights drawn from `key`'s 'init' stream, their optimizer state and step 0, replicated over `mesh`.

    `key` is a root key's raw data (`keys.root_key(seed)`); the state carries it, so the steps read every
    random stream from their arguments.
    """
    _, params, model_state = split_model(create_model(config.model, keys.stream(key, "init")))
    state = TrainState(params, model_state, tx.init(params), jnp.zeros((), jnp.int32), jnp.asarray(key))
    state = jax.device_put(state, parallel.replicated(mesh))
    if not config.train.ema_decay:
        return state
    # copies: the train step donates the state, and no buffer may be donated twice
    ema: dict[str, Any] = jax.tree.map(jnp.copy, state.weights)
    return EmaTrainState(state.params, state.model_state, state.opt_state, state.step, state.key, ema)
