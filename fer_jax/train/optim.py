"""The optimizer and learning-rate schedule of a config: Adam(W) or SGD with momentum, warmup, decay."""

from __future__ import annotations

import jax
import optax
from flax import nnx

from fer_jax.config import Config, ConfigError


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
