"""Training state and the jit-compiled Optax train/eval steps for any model of `fer_jax.models.zoo`.

The steps are plain `jax.jit` functions over a `TrainState` pytree: the NNX
model is split once into a static graph and its weights, and merged back
inside the step (train graph with dropout, eval graph without). They run
data-parallel over a 1-D device mesh (`fer_jax.train.parallel`): batches are split
along the mesh, the state is replicated, XLA inserts the gradient all-reduce.

Recipe ingredients, all off by default:
linear learning-rate warmup, label smoothing, mixup, weight decay on kernels only,
and an exponential moving average (EMA) of the weights, which then are the
weights validated, selected and reported (`selected_weights`).
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
from fer_jax.data.augment import augment
from fer_jax.data.fer2013 import as_nhwc
from fer_jax.models.zoo import create_model
from fer_jax.train import parallel


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes: weights, other model state, optimizer state, step."""

    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState
    step: jax.Array


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """A `TrainState` that also carries the EMA of {'params', 'model_state'} (`train.ema_decay` > 0).

    A subclass rather than an optional field, so runs without EMA keep the
    checkpoint format (and old checkpoints restore) exactly as before.
    """

    ema: dict[str, nnx.State]


Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class Steps:
    """The jitted steps of one model and optimizer on one device mesh.

    `train` takes one batch of float images from the host pipeline;
    `train_chunk` takes the whole uint8 split already on the devices and a
    (steps, batch) array of indices, and runs those steps in one dispatch,
    augmenting each batch on the device (`fer_jax.data.augment`). Both return the
    summed 'loss' and 'correct' of the images they trained on.
    """

    train: Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]
    train_chunk: Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, Metrics]]
    eval: Callable[[TrainState, jax.Array, jax.Array, jax.Array], Metrics]
    learning_rate: Callable[[jax.Array], jax.Array]
    mesh: jax.sharding.Mesh


def steps_per_dispatch(config: Config) -> int:
    """`train.steps_per_dispatch`, with 0 decided by the backend (1 on the CPU, 32 elsewhere)."""
    if config.train.steps_per_dispatch < 0:
        raise ConfigError(f"train.steps_per_dispatch must be 0 (auto) or more, got {config.train.steps_per_dispatch}")
    return config.train.steps_per_dispatch or (1 if jax.default_backend() == "cpu" else 32)


def warmup_steps(config: Config, steps_per_epoch: int) -> int:
    """Steps of linear warmup: `optim.warmup_epochs` rounded to whole steps, at most the whole run."""
    if config.optim.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {config.optim.warmup_epochs}")
    return min(round(config.optim.warmup_epochs * steps_per_epoch), max(1, config.train.epochs * steps_per_epoch))


def make_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then a constant rate, or a cosine or linear decay to 0 at the
    run's end (warmup + linear decay is the triangular one-cycle schedule of the CIFAR-10 speedruns)."""
    opt = config.optim
    total = max(1, config.train.epochs * steps_per_epoch)
    warmup = warmup_steps(config, steps_per_epoch)
    if opt.schedule == "constant":
        main = optax.constant_schedule(opt.learning_rate)
    elif opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(opt.learning_rate, max(1, total - warmup))
    elif opt.schedule == "linear":
        main = optax.linear_schedule(opt.learning_rate, 0.0, max(1, total - warmup))
    else:
        raise ConfigError(f"unknown optim.schedule {opt.schedule!r}: expected 'constant', 'cosine' or 'linear'")
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, opt.learning_rate, warmup), main], [warmup])


def decays(params: nnx.State) -> nnx.State:
    """Weight-decay mask: True for kernels (conv and dense weights, ndim >= 2), False for biases and
    BatchNorm scales and shifts (ndim 1), whose decay only shrinks them without regularising."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: Config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam(W) or SGD with momentum over `make_schedule`; weight decay (if any) on kernels only (`decays`)."""
    opt = config.optim
    schedule = make_schedule(config, steps_per_epoch)
    mask = decays if opt.weight_decay else None
    if opt.name == "adam":
        tx = (
            optax.adamw(schedule, weight_decay=opt.weight_decay, mask=mask)
            if opt.weight_decay
            else optax.adam(schedule)
        )
    elif opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=mask),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    else:
        raise ConfigError(f"unknown optim.name {opt.name!r}: expected 'adam' or 'sgd'")
    return tx, schedule


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


def update_ema(
    ema: dict[str, nnx.State], params: nnx.State, model_state: nnx.State, decay: jax.Array
) -> dict[str, nnx.State]:
    """ema <- decay * ema + (1 - decay) * current, for the weights and the float model state (BatchNorm statistics)."""

    def average(old: jax.Array, new: jax.Array) -> jax.Array:
        if not jnp.issubdtype(new.dtype, jnp.floating):
            return new
        return (decay * old + (1.0 - decay) * new).astype(new.dtype)

    return {
        "params": jax.tree.map(average, ema["params"], params),
        "model_state": jax.tree.map(average, ema["model_state"], model_state),
    }


def selected_weights(state: TrainState) -> TrainState:
    """The state whose `params`/`model_state` are the ones to validate, select, save as 'best' and report:
    the EMA weights when EMA is on, else the trained weights. The pytree structure is unchanged."""
    if not isinstance(state, EmaTrainState):
        return state
    return state.replace(params=state.ema["params"], model_state=state.ema["model_state"])


def init_state(config: Config, steps_per_epoch: int) -> tuple[TrainState, Steps]:
    """Fresh weights from `train.seed`, replicated over the mesh, and the jitted steps that update them."""
    ema_decay = config.train.ema_decay
    if not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {ema_decay}")
    if not 0.0 <= config.optim.label_smoothing < 1.0:
        raise ConfigError(f"optim.label_smoothing must be in [0, 1), got {config.optim.label_smoothing}")
    mesh = parallel.make_mesh(config.train.devices)
    parallel.check_divisible(mesh, config.train.batch_size, "train.batch_size")
    parallel.check_divisible(mesh, config.train.eval_batch_size, "train.eval_batch_size")
    model = create_model(config.model, config.train.seed)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    model.train()
    train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graph = nnx.graphdef(model)
    state = TrainState(params, model_state, tx.init(params), jnp.zeros((), jnp.int32))
    state = jax.device_put(state, parallel.replicated(mesh))
    if ema_decay:  # copies: the train step donates the state, and no buffer may be donated twice
        ema = jax.tree.map(jnp.copy, {"params": state.params, "model_state": state.model_state})
        state = EmaTrainState(state.params, state.model_state, state.opt_state, state.step, ema)
    # Threefry keys: with `models.Dropout`'s 8-bit masks they draw faster on the CPU than 'unsafe_rbg' did.
    dropout_key = jax.random.key(config.train.seed)
    augment_key = jax.random.key(config.train.seed + 1)
    batch_sharding = parallel.batch_sharded(mesh)

    def loss_and_logits(params, model_state, images, labels, key):
        # copy=True: fresh Variables created inside the trace, which BatchNorm may update.
        model = nnx.merge(train_graph, params, model_state, copy=True)
        if config.data.mixup:  # its own key, so the dropout masks are those of the same run without mixup
            weight, partner = mixup_pairs(jax.random.fold_in(key, 1), config.data.mixup, labels.shape[0])
            images = weight * images + (1.0 - weight) * images[partner]
        logits = model(as_nhwc(images), rngs=nnx.Rngs(dropout=key))
        loss = training_loss(logits, labels, config.optim.label_smoothing)
        if config.data.mixup:
            loss = weight * loss + (1.0 - weight) * training_loss(logits, labels[partner], config.optim.label_smoothing)
        return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array) -> tuple[TrainState, Metrics]:
        images = jax.lax.with_sharding_constraint(images, batch_sharding)
        key = jax.random.fold_in(dropout_key, state.step)
        grad_fn = jax.value_and_grad(loss_and_logits, has_aux=True)
        (loss, (logits, model_state)), grads = grad_fn(state.params, state.model_state, images, labels, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1)
        if isinstance(state, EmaTrainState):
            decay = ema_decay_at(ema_decay, state.step)
            new_state = new_state.replace(ema=update_ema(state.ema, params, model_state, decay))
        return new_state, {"loss": loss * labels.shape[0], "correct": correct}

    def train_chunk(
        state: TrainState, images: jax.Array, labels: jax.Array, indices: jax.Array
    ) -> tuple[TrainState, Metrics]:
        def one_step(carry, batch_indices):
            state, sums = carry
            batch = augment(jax.random.fold_in(augment_key, state.step), images[batch_indices], config.data)
            state, out = train_step(state, batch.astype(jnp.float32) / 255.0, labels[batch_indices])
            return (state, jax.tree.map(jnp.add, sums, out)), None

        carry = (state, {"loss": jnp.zeros(()), "correct": jnp.zeros((), jnp.int32)})
        if jax.default_backend() == "cpu":
            # Unrolled: XLA:CPU runs convolution gradients inside a loop body ~30x slower than the same
            # ops outside one (jax-ml/jax#12868; docs/performance.md), a one-trip loop included.
            for batch_indices in indices:
                carry, _ = one_step(carry, batch_indices)
        else:
            carry, _ = jax.lax.scan(one_step, carry, indices)
        return carry

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
        model = nnx.merge(eval_graph, state.params, state.model_state)
        logits = model(as_nhwc(images))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predictions = jnp.argmax(logits, -1)
        return {
            "loss": jnp.sum(jnp.where(mask, losses, 0.0)),
            "correct": jnp.sum((predictions == labels) & mask),
            "count": jnp.sum(mask),
            "predictions": predictions,
            "logits": logits,
        }

    jit_train = jax.jit(train_step, donate_argnums=0)
    jit_eval = jax.jit(eval_step, **parallel.gather_outputs(mesh))

    def sharded_eval(state: TrainState, *batch: jax.Array) -> Metrics:
        return parallel.to_first_device(mesh, jit_eval(state, *parallel.shard_batch(mesh, *batch)))

    return state, Steps(
        train=lambda state, images, labels: jit_train(state, *parallel.shard_batch(mesh, images, labels)),
        train_chunk=jax.jit(train_chunk, donate_argnums=0),
        eval=sharded_eval,
        learning_rate=schedule,
        mesh=mesh,
    )
