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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.config import ConfigError, ModelConfig

NUM_CLASSES = 7
IMAGE_SIZE = 48
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BATCH_NORM_MOMENTUM = 0.9
"""Flax's decay of the running statistics; PyTorch's default momentum 0.1 means the same."""
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")
IM2COL_CHUNK_BYTES = 4 << 20
"""`im2col_conv` builds patch matrices larger than this in batch chunks that fit a CPU's cache."""
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
"""Kaiming-normal (fan_out, ReLU gain), torchvision's initialisation of convolutions followed by BatchNorm."""


def _check_plain_nhwc_conv(
    name: str,
    lhs: jax.Array,
    rhs: jax.Array,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: jax.lax.ConvDimensionNumbers | None = None,
    feature_group_count: int = 1,
    **unused: object,
) -> None:
    """Refuses the `jax.lax.conv_general_dilated` options that `im2col_conv` and `winograd_conv`
    do not implement: groups, dilation, other layouts."""
    if feature_group_count != 1:
        raise ValueError(f"{name} does not support feature groups")
    if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
        raise ValueError(f"{name} does not support dilation")
    if dimension_numbers is not None and dimension_numbers != jax.lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, NHWC_HWIO
    ):
        raise ValueError(f"{name} supports NHWC/HWIO layouts only, got {dimension_numbers}")


def im2col_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    *,
    precision: jax.lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
    **lax_options: object,
) -> jax.Array:
    """An NHWC/HWIO 2D convolution as shifted (strided) slices and one matmul.

    Drop-in for `jax.lax.conv_general_dilated` inside `nnx.Conv`: any strides,
    padding 'VALID', 'SAME' or explicit (low, high) pairs; no dilation or
    groups. XLA:CPU runs its native convolution (and especially its gradients)
    slower than a matmul over image patches: train steps at batch 64 on a
    2-core EPYC run 3.0x (seed_cnn), 1.6x (resnet18) and 1.25x (vgg_bn) faster,
    for up to 1.6x the peak memory (the patches). On GPU the native one wins.
    Patch matrices over `IM2COL_CHUNK_BYTES` are built a few images at a time
    (a rematerialised `lax.map`): the seed CNN's step went from ~125 to ~150
    images/s here, as conv2's 143 MB of patches per batch no longer stream
    through memory.
    """
    _check_plain_nhwc_conv("im2col_conv", lhs, rhs, **lax_options)
    kh, kw, cin, cout = rhs.shape
    stride_h, stride_w = window_strides
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        lhs = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (lhs.shape[1] - kh) // stride_h + 1
    out_w = (lhs.shape[2] - kw) // stride_w + 1

    def patches_times_kernel(images: jax.Array) -> jax.Array:
        patches = jnp.concatenate(
            [
                images[:, i : i + (out_h - 1) * stride_h + 1 : stride_h, j : j + (out_w - 1) * stride_w + 1 : stride_w]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )
        return jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision,
                          preferred_element_type=preferred_element_type)

    return _in_batch_chunks(patches_times_kernel, lhs, out_h * out_w * kh * kw * cin * lhs.dtype.itemsize)


WINOGRAD_MIN_CHANNELS = 16
"""`winograd_conv` leaves convolutions with fewer input channels (the first layer) to `im2col_conv`."""
WINOGRAD_KERNEL = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
"""G of Winograd's F(2x2, 3x3): a 3x3 kernel g becomes the 4x4 tile G g G^T."""


def _winograd_tile_transform(slices: list[jax.Array]) -> list[jax.Array]:
    """B^T of F(2x2, 3x3) along one axis, given the 4 stride-2 slices of that axis."""
    d0, d1, d2, d3 = slices
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _winograd_output_transform(m: list[jax.Array]) -> list[jax.Array]:
    """A^T of F(2x2, 3x3) along one axis: 4 transformed rows give the 2 output rows."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def winograd_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    *,
    precision: jax.lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
    **lax_options: object,
) -> jax.Array:
    """An NHWC/HWIO 3x3 stride-1 convolution by Winograd's F(2x2, 3x3); others go to `im2col_conv`.

    Each 2x2 output tile takes 16 multiplies per channel pair instead of 36:
    the 4x4 input tiles and the kernel are transformed (additions only), 16
    matmuls of (tiles, in) x (in, out) combine them, and the output transform
    adds the products back into 2x2 tiles (Lavin & Gray, "Fast Algorithms for
    Convolutional Neural Networks", CVPR 2016). Gradients are the autodiff of
    these same linear steps. Float32 results differ from a direct convolution
    by rounding only (about 1e-6 relative). On the 2-core EPYC the seed CNN's
    conv2 and conv3 run forward plus backward about 15-25% faster than im2col.
    Tiles are processed a few images at a time (`IM2COL_CHUNK_BYTES`), as in
    `im2col_conv`, so the transformed tiles stay in cache.
    """
    _check_plain_nhwc_conv("winograd_conv", lhs, rhs, **lax_options)
    kh, kw, cin, cout = rhs.shape
    if (kh, kw) != (3, 3) or tuple(window_strides) != (1, 1) or cin < WINOGRAD_MIN_CHANNELS:
        return im2col_conv(lhs, rhs, window_strides, padding, precision=precision,
                           preferred_element_type=preferred_element_type)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    (top, bottom), (left, right) = padding
    out_h, out_w = lhs.shape[1] + top + bottom - 2, lhs.shape[2] + left + right - 2
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    # Pad to whole tiles: odd output sides get one extra row or column, cut off at the end.
    lhs = jnp.pad(lhs, ((0, 0), (top, bottom + 2 * tiles_h - out_h), (left, right + 2 * tiles_w - out_w), (0, 0)))
    g = jnp.asarray(WINOGRAD_KERNEL, rhs.dtype)
    kernel_tiles = jnp.einsum("ai,ijco,bj->abco", g, rhs, g, precision=precision).reshape(16, cin, cout)

    def tiles_times_kernel(images: jax.Array) -> jax.Array:
        rows = _winograd_tile_transform([images[:, i : i + 2 * tiles_h : 2] for i in range(4)])
        tiles = [t for row in rows for t in _winograd_tile_transform([row[:, :, j : j + 2 * tiles_w : 2]
                                                                      for j in range(4)])]
        products = jnp.matmul(jnp.stack(tiles).reshape(16, -1, cin), kernel_tiles, precision=precision,
                              preferred_element_type=preferred_element_type)
        products = products.reshape(4, 4, images.shape[0], tiles_h, tiles_w, cout)
        out_rows = _winograd_output_transform(list(products))
        out = jnp.stack([jnp.stack(_winograd_output_transform(list(row)), axis=3) for row in out_rows], axis=2)
        return out.reshape(images.shape[0], 2 * tiles_h, 2 * tiles_w, cout)

    out = _in_batch_chunks(tiles_times_kernel, lhs, 16 * tiles_h * tiles_w * cin * lhs.dtype.itemsize)
    return out[:, :out_h, :out_w]


def _in_batch_chunks(fn: Callable[[jax.Array], jax.Array], images: jax.Array, bytes_per_image: int) -> jax.Array:
    """`fn(images)`, or over a few images at a time (rematerialised) when the batch's
    intermediates exceed `IM2COL_CHUNK_BYTES`: large ones run memory-bound, their gradients most of all."""
    batch = images.shape[0]
    if batch * bytes_per_image <= IM2COL_CHUNK_BYTES:
        return fn(images)
    per_chunk = max(d for d in range(1, batch + 1)
                    if batch % d == 0 and (d == 1 or d * bytes_per_image <= IM2COL_CHUNK_BYTES))
    out = jax.lax.map(jax.checkpoint(fn), images.reshape(batch // per_chunk, per_chunk, *images.shape[1:]))
    return out.reshape(batch, *out.shape[2:])


def conv_function(impl: str) -> Callable[..., jax.Array]:
    """The convolution primitive for `ModelConfig.conv_impl` ('auto' picks by backend)."""
    if impl == "auto":
        impl = "winograd" if jax.default_backend() == "cpu" else "xla"
    if impl == "winograd":
        return winograd_conv
    if impl == "im2col":
        return im2col_conv
    if impl == "xla":
        return jax.lax.conv_general_dilated
    raise ConfigError(f"unknown conv_impl {impl!r}: expected 'auto', 'winograd', 'im2col' or 'xla'")


def compute_dtype_of(name: str) -> jnp.dtype:
    """The dtype for `ModelConfig.compute_dtype` ('float32' or 'bfloat16')."""
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"unknown compute_dtype {name!r}: expected one of {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pooling of NHWC maps with even sides, as a reshape and a max.

    Same result as `nnx.max_pool(x, (2, 2), (2, 2))`; XLA:CPU runs this form
    (and its gradient) about 15% faster in the seed CNN's train step.
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even sides, got {h}x{w}")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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
        kernel_init: jax.nn.initializers.Initializer = nnx.initializers.lecun_normal(),
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
        return self.conv(in_features, out_features, kernel_size, padding=kernel_size // 2, stride=stride,
                         use_bias=False, kernel_init=HE_NORMAL)

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

    def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        threshold = self.rate * 256
        off = self.deterministic if deterministic is None else deterministic
        if (off or not isinstance(rngs, nnx.Rngs) or threshold != int(threshold) or not 0 < self.rate < 1
                or self.broadcast_dims or inputs.size % 4):
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
        raise ConfigError(f"model.width {config.width} is not available for {config.name!r}: "
                          f"a positive multiplier for {' or '.join(WIDTH_SCALABLE)}, 1 for the others")
    width = {"width": config.width} if config.name in WIDTH_SCALABLE else {}
    return MODELS[config.name](
        rngs=nnx.Rngs(params=seed), conv_impl=config.conv_impl, compute_dtype=config.compute_dtype, **width
    )


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
