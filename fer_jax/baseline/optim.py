"""The PyTorch baseline's optimizer and learning-rate schedule: those of `fer_jax.train.optim` in PyTorch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from fer_jax.config import Config, ConfigError
from fer_jax.train.optim import warmup_steps


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each step, as `fer_jax.train.optim.make_schedule` gives it (linear warmup, then constant,
    cosine or linear)."""
    opt = config.optim
    warmup = warmup_steps(config, steps_per_epoch)
    if opt.schedule not in ("constant", "cosine", "linear"):
        raise ConfigError(f"unknown optim.schedule {opt.schedule!r}: expected 'constant', 'cosine' or 'linear'")
    decay_steps = max(1, config.train.epochs * steps_per_epoch - warmup)

    def rate(step: int) -> float:
        if step < warmup:
            return opt.learning_rate * step / warmup
        if opt.schedule == "constant":
            return opt.learning_rate
        progress = min(step - warmup, decay_steps) / decay_steps
        if opt.schedule == "linear":
            return opt.learning_rate * (1 - progress)
        return opt.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    return rate


def make_torch_optimizer(
    config: Config, parameters: Iterable[nn.Parameter], steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """The optimizer of `fer_jax.train.optim.make_optimizer` in PyTorch, and its schedule (set it before each step).

    Adam is AdamW with decoupled weight decay (plain Adam at weight_decay 0),
    as `optax.adamw`; SGD adds the weight decay to the gradient before
    momentum, as `optax.add_decayed_weights` before `optax.sgd`. As there,
    only kernels (ndim >= 2) are decayed, not biases (`fer_jax.train.optim.decays`).
    """
    opt = config.optim
    schedule = learning_rate_schedule(config, steps_per_epoch)
    parameters = list(parameters)
    groups = [{"params": parameters}]
    if opt.weight_decay:
        groups = [
            {"params": [p for p in parameters if p.ndim >= 2]},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ]
    if opt.name == "adam":
        optimizer = torch.optim.AdamW(groups, lr=schedule(0), weight_decay=opt.weight_decay)
    elif opt.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=schedule(0),
            momentum=opt.momentum,
            nesterov=opt.nesterov and opt.momentum > 0,
            weight_decay=opt.weight_decay,
        )
    else:
        raise ConfigError(f"unknown optim.name {opt.name!r}: expected 'adam' or 'sgd'")
    return optimizer, schedule
