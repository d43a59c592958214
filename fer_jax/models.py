"""Flax NNX models for 48x48 grayscale faces, selected by `ModelConfig.name`.

- `seed_cnn`: the classic FER-2013 Keras network (VALID 3x3 convolutions, as
  Keras' and PyTorch's defaults), so its weights port one-to-one to the
  PyTorch baseline.
- `vgg_bn`: the VGG variant with BatchNorm of Khaireddin & Chen (2021).
- `resnet18`: ResNet-18 with a 3x3 stem and no stem pooling, for 48x48 inputs.

Every model takes (batch, 48, 48, 1) floats in [0, 1] and returns 7 float32
logits (softmax in the loss). Dropout draws from the `dropout` stream of the
`rngs` passed to `__call__`, so modules hold no random state. BatchNorm
statistics are `nnx.BatchStat` state: updated in training mode, used in eval
mode. `compute_dtype='bfloat16'` runs the layers in bfloat16 over float32
weights (for GPU training); BatchNorm statistics stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.config import ConfigError, ModelConfig
from fer_jax.conv import conv_function, max_pool_2x2

NUM_CLASSES = 7
IMAGE_SIZE = 48
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BATCH_NORM_MOMENTUM = 0.9
"""Flax's decay of the running statistics; PyTorch's default momentum 0.1 means the same."""
LECUN_NORMAL = nnx.initializers.lecun_normal()
"""Flax's default initialisation of convolutions and dense layers."""
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
"""Kaiming-normal (fan_out, ReLU gain), torchvision's initialisation of convolutions followed by BatchNorm."""


def compute_dtype_of(name: str) -> jnp.dtype:
    """The dtype for `ModelConfig.compute_dtype` ('float32' or 'bfloat16')."""
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"unknown compute_dtype {name!r}: expected one of {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


@dataclass(frozen=True)
class Layers:
    """Builds a model's layers with one RNG stream, convolution primitive and compute dtype.

    Weights are always float32 (`param_dtype`); `dtype` is what the layer computes in.
    """

    rngs: nnx.Rngs
    conv_impl: str
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
            conv_general_dilated=conv_function(self.conv_impl),
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


class SeedCNN(nnx.Module):
    """Conv32-Conv64-Pool-Drop.25-Conv128-Pool-Conv128-Pool-Drop.25-Dense1024-Drop.5-Dense7.

    The classic FER-2013 Keras network, 2,345,607 parameters. Input: (batch,
    48, 48, 1) floats in [0, 1]. Output: 7 float32 logits (softmax in the loss).
    Dropout draws from the `dropout` stream of the `rngs` passed to `__call__`,
    so the module itself holds no random state and checkpoints hold only weights.
    """

    def __init__(self, *, rngs: nnx.Rngs, conv_impl: str = "auto", compute_dtype: str = "float32") -> None:
        layers = Layers(rngs, conv_impl, compute_dtype)
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


class ConvBNReLU(nnx.Module):
    """3x3 convolution (padding 1, no bias), BatchNorm, ReLU."""

    def __init__(self, layers: Layers, in_features: int, out_features: int) -> None:
        self.conv = layers.conv_before_norm(in_features, out_features)
        self.norm = layers.batch_norm(out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.norm(self.conv(x)))


class VGGBN(nnx.Module):
    """VGG with BatchNorm: the FER-2013 VGG variant of Khaireddin & Chen (2021).

    Four stages of two 3x3 conv-BN-ReLU blocks (64, 128, 256, 512 channels),
    each stage ending in 2x2 max-pooling (48 -> 24 -> 12 -> 6 -> 3), then
    Flatten(3x3x512) - Dense4096-ReLU-Dropout - Dense4096-ReLU-Dropout - Dense7.
    40,374,599 parameters: 4,686,144 in the convolutions and BatchNorms,
    35,688,455 in the dense head.

    Source: Y. Khaireddin and Z. Chen, "Facial Emotion Recognition: State of the
    Art Performance on FER2013", arXiv:2105.03588 (code: github.com/usef-kh/fer):
    73.28% PrivateTest after 300 epochs of SGD with ten-crop test-time
    augmentation; a deeper, BatchNorm relative of the VGG of Pramerdorfer &
    Kampel (2016). Differences: they feed 40x40 crops (a 2x2x512 flatten, so a
    smaller dense1); here the whole 48x48 face. Their convolutions carry a bias
    before BatchNorm; here none (BatchNorm cancels it). Kaiming-normal conv
    weights; dropout 0.2, their model's default. `width` multiplies every
    channel count and the hidden width (1: the sizes above).
    """

    STAGE_FEATURES = (64, 128, 256, 512)

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        conv_impl: str = "auto",
        compute_dtype: str = "float32",
        hidden_features: int = 4096,
        dropout_rate: float = 0.2,
        width: float = 1.0,
    ) -> None:
        layers = Layers(rngs, conv_impl, compute_dtype)
        hidden_features = scaled(hidden_features, width)
        stages = []
        in_features = 1
        for features in (scaled(f, width) for f in self.STAGE_FEATURES):
            stages.append(nnx.List([ConvBNReLU(layers, in_features, features), ConvBNReLU(layers, features, features)]))
            in_features = features
        self.stages = nnx.List(stages)
        side = IMAGE_SIZE // 2 ** len(self.STAGE_FEATURES)
        self.dense1 = layers.linear(side * side * in_features, hidden_features)
        self.dense2 = layers.linear(hidden_features, hidden_features)
        self.classifier = layers.linear(hidden_features, NUM_CLASSES)
        self.dropout = Dropout(dropout_rate)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        for stage in self.stages:
            for block in stage:
                x = block(x)
            x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.dense1(x)), rngs=rngs)
        x = self.dropout(nnx.relu(self.dense2(x)), rngs=rngs)
        return self.classifier(x).astype(jnp.float32)


class BasicBlock(nnx.Module):
    """ResNet basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (PyTorch's padding).

    The shortcut is the identity, or a strided 1x1 conv-BN where the shape
    changes. The last BatchNorm's scale starts at zero (Goyal et al. 2017), so
    each block starts as its shortcut: deep nets then train like shallow ones
    early on.
    """

    def __init__(self, layers: Layers, in_features: int, out_features: int, stride: int) -> None:
        self.conv1 = layers.conv_before_norm(in_features, out_features, stride=stride)
        self.norm1 = layers.batch_norm(out_features)
        self.conv2 = layers.conv_before_norm(out_features, out_features)
        self.norm2 = layers.batch_norm(out_features, scale_init=nnx.initializers.zeros)
        if stride != 1 or in_features != out_features:
            self.shortcut_conv = layers.conv_before_norm(in_features, out_features, 1, stride=stride)
            self.shortcut_norm = layers.batch_norm(out_features)
        else:
            self.shortcut_conv = self.shortcut_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = nnx.relu(self.norm1(self.conv1(x)))
        residual = self.norm2(self.conv2(residual))
        shortcut = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return nnx.relu(residual + shortcut)


class ResNet18(nnx.Module):
    """ResNet-18 for 48x48 faces: 3x3 stem, no stem pooling, global average pooling.

    Stem: 3x3 conv64-BN-ReLU at full resolution (ImageNet's 7x7/2 conv and
    max-pool would shrink 48x48 to 12x12 before the first block). Then four
    stages of two basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2:
    48 -> 48 -> 24 -> 12 -> 6), global average pooling, Dropout, Dense7.
    11,171,271 parameters.

    Source: K. He et al., "Deep Residual Learning for Image Recognition" (CVPR
    2016), with the 3x3 stem commonly used for small images (as in CIFAR
    ResNet-18s). Kaiming-normal conv weights as torchvision's; the last
    BatchNorm scale of each block starts at zero (torchvision's
    `zero_init_residual`); dropout 0.2 before the classifier. `width`
    multiplies every channel count (1: the sizes above; 0.25: 16-128 channels).
    """

    STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
    BLOCKS_PER_STAGE = 2

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        conv_impl: str = "auto",
        compute_dtype: str = "float32",
        dropout_rate: float = 0.2,
        width: float = 1.0,
    ) -> None:
        layers = Layers(rngs, conv_impl, compute_dtype)
        stages = [(scaled(features, width), stride) for features, stride in self.STAGES]
        self.stem = ConvBNReLU(layers, 1, stages[0][0])
        blocks = []
        in_features = stages[0][0]
        for features, stride in stages:
            for index in range(self.BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(layers, in_features, features, stride if index == 0 else 1))
                in_features = features
        self.blocks = nnx.List(blocks)
        self.dropout = Dropout(dropout_rate)
        self.classifier = layers.linear(in_features, NUM_CLASSES)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.dropout(x.mean(axis=(1, 2)), rngs=rngs)
        return self.classifier(x).astype(jnp.float32)


MODELS: dict[str, type[nnx.Module]] = {"seed_cnn": SeedCNN, "vgg_bn": VGGBN, "resnet18": ResNet18}
WIDTH_SCALABLE = ("vgg_bn", "resnet18")


def scaled(features: int, width: float) -> int:
    """`features` times the width multiplier, at least 1."""
    return max(1, round(features * width))


def create_model(config: ModelConfig, seed: int) -> nnx.Module:
    """Build the model named by `config.name` with weights drawn from `seed`."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r}; choose one of {sorted(MODELS)}")
    compute_dtype_of(config.compute_dtype)  # a bad name fails here, before any weights are drawn
    if config.width <= 0 or (config.width != 1.0 and config.name not in WIDTH_SCALABLE):
        raise ConfigError(
            f"model.width {config.width} is not available for {config.name!r}: "
            f"a positive multiplier for {' or '.join(WIDTH_SCALABLE)}, 1 for the others"
        )
    width = {"width": config.width} if config.name in WIDTH_SCALABLE else {}
    return MODELS[config.name](
        rngs=nnx.Rngs(params=seed), conv_impl=config.conv_impl, compute_dtype=config.compute_dtype, **width
    )


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
