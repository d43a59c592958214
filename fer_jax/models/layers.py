"""Building blocks shared by the zoo: the layer factory (one RNG stream and compute dtype), the
byte-mask dropout, the 2x2 max-pool, the centre crop, conv-BN-ReLU, and the width multiplier."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.config import ConfigError
from fer_jax.environment import has_bfloat16_units

NUM_CLASSES = 7
IMAGE_SIZE = 48
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BATCH_NORM_MOMENTUM = 0.9
"""Flax's decay of the running statistics; PyTorch's default momentum 0.1 means the same."""
LECUN_NORMAL = nnx.initializers.lecun_normal()
"""Flax's default initialisation of convolutions and dense layers."""
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
"""Kaiming-normal (fan_out, ReLU gain), torchvision's initialisation of convolutions followed by BatchNorm."""


def resolve_compute_dtype(name: str) -> str:
    """`ModelConfig.compute_dtype` with 'auto' decided for this machine: 'bfloat16' on a GPU or TPU and on
    a CPU with bfloat16 matrix units (AMX or AVX512-BF16), 'float32' on other CPUs, which have none."""
    if name == "auto":
        bfloat16_units = jax.default_backend() != "cpu" or has_bfloat16_units()
        return "bfloat16" if bfloat16_units else "float32"
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"unknown compute_dtype {name!r}: expected 'auto' or one of {sorted(COMPUTE_DTYPES)}")
    return name


def compute_dtype_of(name: str) -> jnp.dtype:
    """The dtype layers compute in for `ModelConfig.compute_dtype` ('auto', 'float32' or 'bfloat16')."""
    return COMPUTE_DTYPES[resolve_compute_dtype(name)]


@dataclass(frozen=True)
class Layers:
    """Builds a model's layers with one RNG stream and compute dtype.

    Weights are always float32 (`param_dtype`); `dtype` is what the layer computes in. Convolutions are
    XLA's own (`lax.conv_general_dilated`: cuDNN on a GPU, Eigen on the CPU under the project's XLA flags,
    docs/performance.md).
    """

    rngs: nnx.Rngs
    compute_dtype: str

    def conv(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        padding: str | int,
        stride: int = 1,
        use_bias: bool = True,
        kernel_init: jax.nn.initializers.Initializer = LECUN_NORMAL,
    ) -> nnx.Conv:
        return nnx.Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=stride,
            padding=padding,
            use_bias=use_bias,
            kernel_init=kernel_init,
            dtype=compute_dtype_of(self.compute_dtype),
            rngs=self.rngs,
        )

    def conv_before_norm(
        self, in_features: int, out_features: int, kernel_size: int = 3, *, stride: int = 1
    ) -> nnx.Conv:
        """A conv feeding BatchNorm: no bias (BatchNorm's shift replaces it), Kaiming-normal
        weights, and PyTorch's `padding=kernel_size // 2`, so PyTorch weights would port exactly."""
        return self.conv(
            in_features,
            out_features,
            kernel_size,
            padding=kernel_size // 2,
            stride=stride,
            use_bias=False,
            kernel_init=HE_NORMAL,
        )

    def batch_norm(
        self, features: int, *, scale_init: jax.nn.initializers.Initializer = nnx.initializers.ones
    ) -> nnx.BatchNorm:
        return nnx.BatchNorm(
            features,
            momentum=BATCH_NORM_MOMENTUM,
            epsilon=1e-5,
            scale_init=scale_init,
            dtype=compute_dtype_of(self.compute_dtype),
            rngs=self.rngs,
        )

    def linear(self, in_features: int, out_features: int) -> nnx.Linear:
        return nnx.Linear(in_features, out_features, dtype=compute_dtype_of(self.compute_dtype), rngs=self.rngs)


class Dropout(nnx.Dropout):
    """`nnx.Dropout` that draws 8 random bits per element instead of a float32 uniform.

    For rates that are whole multiples of 1/256 (the zoo's 0.25 and 0.5) the
    mask is exact: an element is kept where its random byte is >= rate * 256.
    A quarter of the random bits and no float conversion: the seed CNN's first
    dropout (2M elements per batch of 64) takes 2 ms instead of 10-30 ms on the
    2-core EPYC. Other rates, broadcast masks and odd sizes use `nnx.Dropout`.
    """

    def __call__(
        self, inputs: jax.Array, *, deterministic: bool | None = None, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        threshold = self.rate * 256
        off = self.deterministic if deterministic is None else deterministic
        if (
            off
            or not isinstance(rngs, nnx.Rngs)
            or threshold != int(threshold)
            or not 0 < self.rate < 1
            or self.broadcast_dims
            or inputs.size % 4
        ):
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        bits = jax.random.bits(rngs[self.rng_collection](), (inputs.size // 4,), jnp.uint32)
        keep = jax.lax.bitcast_convert_type(bits, jnp.uint8).reshape(inputs.shape) >= int(threshold)
        return jax.lax.select(keep, inputs / (1.0 - self.rate), jnp.zeros_like(inputs))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pooling of NHWC maps, as a reshape and a max.

    Same result as `nnx.max_pool(x, (2, 2), (2, 2))`; XLA:CPU runs this form
    (and its gradient) about 15% faster in the seed CNN's train step. An odd
    side drops its last row or column, as PyTorch's default (floor) mode does.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def centre_crop(x: jax.Array, side: int) -> jax.Array:
    """The central `side` x `side` pixels of NHWC images (`side` 0: all of them)."""
    if not side:
        return x
    top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
    return x[:, top : top + side, left : left + side]


class ConvBNReLU(nnx.Module):
    """3x3 convolution (padding 1, no bias), BatchNorm, ReLU."""

    def __init__(self, layers: Layers, in_features: int, out_features: int) -> None:
        self.conv = layers.conv_before_norm(in_features, out_features)
        self.norm = layers.batch_norm(out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.norm(self.conv(x)))


def scaled(features: int, width: float) -> int:
    """`features` times the width multiplier, at least 1."""
    return max(1, round(features * width))
