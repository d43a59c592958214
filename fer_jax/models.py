"""Flax NNX models for 48x48 grayscale faces.

The seed CNN is the classic FER-2013 Keras network (VALID 3x3 convolutions,
as Keras' and PyTorch's defaults), so its weights port one-to-one to the
PyTorch baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.config import ConfigError, ModelConfig

NUM_CLASSES = 7
IMAGE_SIZE = 48


def im2col_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: jax.lax.ConvDimensionNumbers | None = None,
    feature_group_count: int = 1,
    precision: jax.lax.PrecisionLike = None,
    **unused: object,
) -> jax.Array:
    """A stride-1, VALID, NHWC/HWIO convolution as shifted slices and one matmul.

    Drop-in for `jax.lax.conv_general_dilated` inside `nnx.Conv`. XLA:CPU runs
    its native convolution (and especially its gradients) about 2x slower than
    a matmul over image patches on this network; on GPU the native one wins.
    """
    if tuple(window_strides) != (1, 1) or padding != "VALID" or feature_group_count != 1:
        raise ValueError("im2col_conv supports stride 1, VALID padding and no groups only")
    if any(d != 1 for d in (lhs_dilation or (1, 1))) or any(d != 1 for d in (rhs_dilation or (1, 1))):
        raise ValueError("im2col_conv does not support dilation")
    kh, kw, cin, cout = rhs.shape
    out_h, out_w = lhs.shape[1] - kh + 1, lhs.shape[2] - kw + 1
    patches = jnp.concatenate(
        [lhs[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


def conv_function(impl: str) -> Callable[..., jax.Array]:
    """The convolution primitive for `ModelConfig.conv_impl` ('auto' picks by backend)."""
    if impl == "auto":
        impl = "im2col" if jax.default_backend() == "cpu" else "xla"
    if impl == "im2col":
        return im2col_conv
    if impl == "xla":
        return jax.lax.conv_general_dilated
    raise ConfigError(f"unknown conv_impl {impl!r}: expected 'auto', 'im2col' or 'xla'")


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pooling of NHWC maps with even sides, as a reshape and a max.

    Same result as `nnx.max_pool(x, (2, 2), (2, 2))`; XLA:CPU runs this form
    (and its gradient) about 15% faster in the seed CNN's train step.
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even sides, got {h}x{w}")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SeedCNN(nnx.Module):
    """Conv32-Conv64-Pool-Drop.25-Conv128-Pool-Conv128-Pool-Drop.25-Dense1024-Drop.5-Dense7.

    Input: (batch, 48, 48, 1) floats in [0, 1]. Output: 7 logits (softmax in the loss).
    Dropout draws from the `dropout` stream of the `rngs` passed to `__call__`,
    so the module itself holds no random state and checkpoints hold only weights.
    """

    def __init__(self, *, rngs: nnx.Rngs, conv_impl: str = "auto") -> None:
        conv = conv_function(conv_impl)

        def conv3x3(cin: int, cout: int) -> nnx.Conv:
            return nnx.Conv(cin, cout, (3, 3), padding="VALID", conv_general_dilated=conv, rngs=rngs)

        self.conv1 = conv3x3(1, 32)
        self.conv2 = conv3x3(32, 64)
        self.dropout1 = nnx.Dropout(0.25)
        self.conv3 = conv3x3(64, 128)
        self.conv4 = conv3x3(128, 128)
        self.dropout2 = nnx.Dropout(0.25)
        self.dense1 = nnx.Linear(4 * 4 * 128, 1024, rngs=rngs)
        self.dropout3 = nnx.Dropout(0.5)
        self.dense2 = nnx.Linear(1024, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        x = self.dropout1(max_pool_2x2(x), rngs=rngs)
        x = max_pool_2x2(nnx.relu(self.conv3(x)))
        x = max_pool_2x2(nnx.relu(self.conv4(x)))
        x = self.dropout2(x, rngs=rngs)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout3(nnx.relu(self.dense1(x)), rngs=rngs)
        return self.dense2(x)


MODELS: dict[str, type[nnx.Module]] = {"seed_cnn": SeedCNN}


def create_model(config: ModelConfig, seed: int) -> nnx.Module:
    """Build the model named by `config.name` with weights drawn from `seed`."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r}; choose one of {sorted(MODELS)}")
    return MODELS[config.name](rngs=nnx.Rngs(params=seed), conv_impl=config.conv_impl)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
