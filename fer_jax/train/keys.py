"""The random streams of a run: one root key per seed, split into named streams.

`jax.random.split` (not seed offsets or `fold_in` on one shared key) gives each stream its own key, so the
dropout of seed 0 is not the augmentation of seed 1, and mixup's draw is no dropout layer's key. A step's
key in a stream is `fold_in(stream, step)` (an epoch's, for the shuffle). The root travels in the
`TrainState` as raw key data (uint32[2], threefry), so every seed runs the same compiled steps and a
checkpoint carries its run's streams.
"""

from __future__ import annotations

import jax

STREAMS = ("init", "dropout", "augment", "mixup", "shuffle")
"""The named streams, in the order the root key is split into them."""


def root_key(seed: int) -> jax.Array:
    """The raw key data (uint32[2]) of a seed's root key: what a `TrainState` carries."""
    return jax.random.key_data(jax.random.key(seed))


def stream(root: jax.Array, name: str) -> jax.Array:
    """The typed key of stream `name` of a root (raw key data, as `root_key` gives)."""
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; expected one of {STREAMS}")
    return jax.random.split(jax.random.wrap_key_data(root), len(STREAMS))[STREAMS.index(name)]


def step_key(root: jax.Array, name: str, step: jax.Array | int) -> jax.Array:
    """Stream `name`'s key for one step (or one epoch, for 'shuffle')."""
    return jax.random.fold_in(stream(root, name), step)
