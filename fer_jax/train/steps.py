"""The jit-compiled Optax train and eval steps for any model of `fer_jax.models.zoo`, built once per configuration.

`make_train_step`, `make_train_chunk` and `make_eval_step` build pure functions from a graph
definition, the optimizer and the recipe: the state (with its random key) and the batch are their
arguments, so every seed, restore and comparison of one configuration runs the same compiled
programs (`build_steps` keeps them per process). The model is merged inside the step from its
graph and the state's weights (train graph with dropout, eval graph without). They run
data-parallel over a 1-D device mesh (`fer_jax.train.parallel`): batches are split along the
mesh, the state is replicated, XLA inserts the gradient all-reduce.

Recipe ingredients, all off by default: linear learning-rate warmup, label smoothing, mixup, weight
decay on kernels only (`fer_jax.train.optim`), and an exponential moving average (EMA) of the
weights, which then are the weights validated, selected and reported (`state.selected_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fer_jax.config import Config, ConfigError, DataConfig
from fer_jax.data.augment import augment
from fer_jax.data.labels import as_nhwc
from fer_jax.models.zoo import model_skeleton
from fer_jax.train import keys, parallel
from fer_jax.train.eval_step import EvalStep, Metrics, build_eval_step
from fer_jax.train.optim import make_optimizer
from fer_jax.train.state import EmaTrainState, TrainState, Weights, create_state, split_model

TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]
TrainChunk = Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, Metrics]]


@dataclass(frozen=True)
class Steps:
    """The jitted steps of one configuration on one device mesh.

    `train` takes one batch of float images from the host pipeline; `train_chunk` takes the whole uint8
    split already on the devices and a (steps, batch) array of indices, and runs those steps in one
    dispatch, augmenting each batch on the device (`fer_jax.data.augment`). Both return the summed
    'loss' and 'correct' of the images they trained on. `eval` takes `TrainState.weights`.
    """

    train: TrainStep
    train_chunk: TrainChunk
    eval: EvalStep
    tx: optax.GradientTransformation
    learning_rate: optax.Schedule
    mesh: jax.sharding.Mesh


def steps_per_dispatch(config: Config) -> int:
    """`train.steps_per_dispatch`, with 0 decided by the backend (1 on the CPU, 32 elsewhere)."""
    if config.train.steps_per_dispatch < 0:
        raise ConfigError(f"train.steps_per_dispatch must be 0 (auto) or more, got {config.train.steps_per_dispatch}")
    return config.train.steps_per_dispatch or (1 if jax.default_backend() == "cpu" else 32)


def training_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Mean cross-entropy against one-hot targets smoothed to (1 - s) * one-hot + s / classes."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def mixup_pairs(key: jax.Array, alpha: float, batch: int) -> tuple[jax.Array, jax.Array]:
    """Mixup's blend weight ~ Beta(alpha, alpha) and each image's partner (a permutation of the batch).
    The cross-entropy is linear in the targets, so the mixed loss is the same blend of both labels' losses."""
    weight_key, partner_key = jax.random.split(key)
    return jax.random.beta(weight_key, alpha, alpha), jax.random.permutation(partner_key, batch)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """The EMA decay used after update `step` (0-based): min(decay, (1 + step) / (10 + step)).

    The ramp (TensorFlow's `ExponentialMovingAverage(num_updates=...)`) lets the
    average forget the random initial weights within a short run.
    """
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema: Weights, weights: Weights, decay: jax.Array) -> Weights:
    """ema <- decay * ema + (1 - decay) * current, for the weights and the float model state (BatchNorm statistics)."""

    def average(old: jax.Array, new: jax.Array) -> jax.Array:
        if not jnp.issubdtype(new.dtype, jnp.floating):
            return new
        return (decay * old + (1.0 - decay) * new).astype(new.dtype)

    return jax.tree.map(average, ema, weights)


def make_loss(train_graph: nnx.GraphDef, config: Config) -> Callable:
    """(params, model_state, images, labels, root key, step) -> (loss, (logits, new model state)): the train-mode
    forward pass with the step's dropout key, and mixup from its own stream."""
    smoothing, mixup = config.optim.label_smoothing, config.data.mixup

    def loss_and_logits(params, model_state, images, labels, root, step):
        # copy=True: fresh Variables created inside the trace, which BatchNorm may update.
        model = nnx.merge(train_graph, params, model_state, copy=True)
        if mixup:
            weight, partner = mixup_pairs(keys.step_key(root, "mixup", step), mixup, labels.shape[0])
            images = weight * images + (1.0 - weight) * images[partner]
        logits = model(as_nhwc(images), rngs=nnx.Rngs(dropout=keys.step_key(root, "dropout", step)))
        loss = training_loss(logits, labels, smoothing)
        if mixup:
            loss = weight * loss + (1.0 - weight) * training_loss(logits, labels[partner], smoothing)
        return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

    return loss_and_logits


def make_train_step(
    train_graph: nnx.GraphDef, tx: optax.GradientTransformation, config: Config, mesh: jax.sharding.Mesh
) -> TrainStep:
    """One optimizer update on one batch: (state, float images, labels) -> (new state, summed metrics)."""
    grad_fn = jax.value_and_grad(make_loss(train_graph, config), has_aux=True)
    batch_sharding = parallel.batch_sharded(mesh)
    ema_decay = config.train.ema_decay

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array) -> tuple[TrainState, Metrics]:
        images = jax.lax.with_sharding_constraint(images, batch_sharding)
        args = (state.params, state.model_state, images, labels, state.key, state.step)
        (loss, (logits, model_state)), grads = grad_fn(*args)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1)
        if isinstance(state, EmaTrainState):
            decay = ema_decay_at(ema_decay, state.step)
            new_state = new_state.replace(ema=update_ema(state.ema, new_state.weights, decay))
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return new_state, {"loss": loss * labels.shape[0], "correct": correct}

    return train_step


def make_train_chunk(train_step: TrainStep, data: DataConfig, scan: bool) -> TrainChunk:
    """Several train steps in one call, each gathering and augmenting its batch on the device from the
    step's 'augment' key. `scan`: as one `lax.scan` (GPU, TPU); else unrolled, because XLA:CPU runs
    convolution gradients inside a loop body ~30x slower than the same ops outside one (jax-ml/jax#12868;
    docs/performance.md), a one-trip loop included."""

    def one_step(carry, batch_indices, images, labels):
        state, sums = carry
        batch = augment(keys.step_key(state.key, "augment", state.step), images[batch_indices], data)
        state, out = train_step(state, batch.astype(jnp.float32) / 255.0, labels[batch_indices])
        return (state, jax.tree.map(jnp.add, sums, out)), None

    def train_chunk(state: TrainState, images: jax.Array, labels: jax.Array, indices: jax.Array):
        carry = (state, {"loss": jnp.zeros(()), "correct": jnp.zeros((), jnp.int32)})
        if scan:
            carry, _ = jax.lax.scan(lambda c, i: one_step(c, i, images, labels), carry, indices)
            return carry
        for batch_indices in indices:
            carry, _ = one_step(carry, batch_indices, images, labels)
        return carry

    return train_chunk


_TRAIN_STEPS: dict[tuple[str, int], Steps] = {}


def build_steps(config: Config, steps_per_epoch: int) -> Steps:
    """The jitted steps of `config`, built (and compiled on first use) once per process for every configuration
    that differs only in `train.seed` and `run_dir`: the seed reaches them through the state's key."""
    recipe = config.to_dict()
    recipe.pop("run_dir")
    recipe["train"].pop("seed")
    cache_key = (json.dumps(recipe, sort_keys=True), steps_per_epoch)
    if cache_key not in _TRAIN_STEPS:
        _TRAIN_STEPS[cache_key] = _new_steps(config, steps_per_epoch)
    return _TRAIN_STEPS[cache_key]


def _new_steps(config: Config, steps_per_epoch: int) -> Steps:
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {config.train.ema_decay}")
    if not 0.0 <= config.optim.label_smoothing < 1.0:
        raise ConfigError(f"optim.label_smoothing must be in [0, 1), got {config.optim.label_smoothing}")
    mesh = parallel.make_mesh(config.train.devices)
    parallel.check_divisible(mesh, config.train.batch_size, "train.batch_size")
    parallel.check_divisible(mesh, config.train.eval_batch_size, "train.eval_batch_size")
    tx, schedule = make_optimizer(config, steps_per_epoch)
    train_graph, _, _ = split_model(model_skeleton(config.model))
    train_step = make_train_step(train_graph, tx, config, mesh)
    jit_train = jax.jit(train_step, donate_argnums=0)
    scan = jax.default_backend() != "cpu"
    return Steps(
        train=lambda state, images, labels: jit_train(state, *parallel.shard_batch(mesh, images, labels)),
        train_chunk=jax.jit(make_train_chunk(train_step, config.data, scan), donate_argnums=0),
        eval=build_eval_step(config.model, config.train.devices),
        tx=tx,
        learning_rate=schedule,
        mesh=mesh,
    )


def init_state(config: Config, steps_per_epoch: int) -> tuple[TrainState, Steps]:
    """The steps of `config` and a fresh state of seed `train.seed` for them (`state.create_state`)."""
    steps = build_steps(config, steps_per_epoch)
    return create_state(config, keys.root_key(config.train.seed), steps.tx, steps.mesh), steps
