"""The seed CNN: the classic FER-2013 Keras network, with VALID convolutions so its weights port
one-to-one to the PyTorch baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.layers import NUM_CLASSES, Dropout, Layers, max_pool_2x2


class SeedCNN(nnx.Module):
    """Conv32-Conv64-Pool-Drop.25-Conv128-Pool-Conv128-Pool-Drop.25-Dense1024-Drop.5-Dense7.

    The classic FER-2013 Keras network, 2,345,607 parameters. Input: (batch,
    48, 48, 1) floats in [0, 1]. Output: 7 float32 logits (softmax in the loss).
    Dropout draws from the `dropout` stream of the `rngs` passed to `__call__`,
    so the module itself holds no random state and checkpoints hold only weights.
    """

    def __init__(self, *, rngs: nnx.Rngs, compute_dtype: str = "float32") -> None:
        layers = Layers(rngs, compute_dtype)
        self.conv1 = layers.conv(1, 32, padding="VALID")
        self.conv2 = layers.conv(32, 64, padding="VALID")
        self.dropout1 = Dropout(0.25)
        self.conv3 = layers.conv(64, 128, padding="VALID")
        self.conv4 = layers.conv(128, 128, padding="VALID")
        self.dropout2 = Dropout(0.25)
        self.dense1 = layers.linear(4 * 4 * 128, 1024)
        self.dropout3 = Dropout(0.5)
        self.dense2 = layers.linear(1024, NUM_CLASSES)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        x = self.dropout1(max_pool_2x2(x), rngs=rngs)
        x = max_pool_2x2(nnx.relu(self.conv3(x)))
        x = max_pool_2x2(nnx.relu(self.conv4(x)))
        x = self.dropout2(x, rngs=rngs)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout3(nnx.relu(self.dense1(x)), rngs=rngs)
        return self.dense2(x).astype(jnp.float32)
