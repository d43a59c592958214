"""Training state and the jit-compiled Optax train/eval steps for any model of `fer_jax.models`.

The steps are plain `jax.jit` functions over a `TrainState` pytree: the NNX
model is split once into a static graph and its weights, and merged back
inside the step (train graph with dropout, eval graph without).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fer_jax.config import Config, ConfigError
from fer_jax.data import as_nhwc
from fer_jax.models import create_model


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes: weights, other model state, optimizer state, step."""

    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState
    step: jax.Array


@dataclass(frozen=True)
class Steps:
    """The jitted train and eval steps of one model and optimizer."""

    train: Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
    eval: Callable[[TrainState, jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]
    learning_rate: Callable[[jax.Array], jax.Array]


def make_optimizer(config: Config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam or SGD with momentum, at a constant or cosine-decayed learning rate."""
    opt = config.optim
    if opt.schedule == "constant":
        schedule = optax.constant_schedule(opt.learning_rate)
    elif opt.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(opt.learning_rate, max(1, config.train.epochs * steps_per_epoch))
    else:
        raise ConfigError(f"unknown optim.schedule {opt.schedule!r}: expected 'constant' or 'cosine'")
    if opt.name == "adam":
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay) if opt.weight_decay else optax.adam(schedule)
    elif opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    else:
        raise ConfigError(f"unknown optim.name {opt.name!r}: expected 'adam' or 'sgd'")
    return tx, schedule


def init_state(config: Config, steps_per_epoch: int) -> tuple[TrainState, Steps]:
    """Fresh weights from `train.seed`, and the jitted steps that update them."""
    model = create_model(config.model, config.train.seed)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    model.train()
    train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graph = nnx.graphdef(model)
    state = TrainState(params, model_state, tx.init(params), jnp.zeros((), jnp.int32))
    dropout_key = jax.random.key(config.train.seed, impl="unsafe_rbg")

    def loss_and_logits(params, model_state, images, labels, key):
        model = nnx.merge(train_graph, params, model_state)
        logits = model(as_nhwc(images), rngs=nnx.Rngs(dropout=key))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
        key = jax.random.fold_in(dropout_key, state.step)
        grad_fn = jax.value_and_grad(loss_and_logits, has_aux=True)
        (loss, (logits, model_state)), grads = grad_fn(state.params, state.model_state, images, labels, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        new_state = TrainState(params, model_state, opt_state, state.step + 1)
        return new_state, {"loss": loss * labels.shape[0], "correct": correct}

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array):
        model = nnx.merge(eval_graph, state.params, state.model_state)
        logits = model(as_nhwc(images))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predictions = jnp.argmax(logits, -1)
        return {
            "loss": jnp.sum(jnp.where(mask, losses, 0.0)),
            "correct": jnp.sum((predictions == labels) & mask),
            "count": jnp.sum(mask),
            "predictions": predictions,
        }

    return state, Steps(jax.jit(train_step, donate_argnums=0), jax.jit(eval_step), schedule)
