"""CPU convolution kernels and the 2x2 max-pool that the models in `fer_jax.models.zoo` compute with.

XLA:CPU runs its native convolution, and especially its gradients, slower than a
matmul over image patches. `im2col_conv` builds the patches from shifted slices;
`winograd_conv` does 3x3 stride-1 layers by Winograd's F(2x2, 3x3). Both are
drop-ins for `jax.lax.conv_general_dilated` inside `nnx.Conv` (NHWC/HWIO, no
dilation or groups) and match it to rounding, values and gradients.
`conv_function` picks one by `ModelConfig.conv_impl` ('auto': Winograd on the CPU,
XLA's convolution, i.e. cuDNN, elsewhere). docs/performance.md has the profile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from fer_jax.config import ConfigError

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")
IM2COL_CHUNK_BYTES = 4 << 20
"""`im2col_conv` builds patch matrices larger than this in batch chunks that fit a CPU's cache."""


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
        return jnp.matmul(
            patches,
            rhs.reshape(kh * kw * cin, cout),
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

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
        return im2col_conv(
            lhs, rhs, window_strides, padding, precision=precision, preferred_element_type=preferred_element_type
        )
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
        tiles = [
            t for row in rows for t in _winograd_tile_transform([row[:, :, j : j + 2 * tiles_w : 2] for j in range(4)])
        ]
        products = jnp.matmul(
            jnp.stack(tiles).reshape(16, -1, cin),
            kernel_tiles,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
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
    per_chunk = max(
        d for d in range(1, batch + 1) if batch % d == 0 and (d == 1 or d * bytes_per_image <= IM2COL_CHUNK_BYTES)
    )
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


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pooling of NHWC maps with even sides, as a reshape and a max.

    Same result as `nnx.max_pool(x, (2, 2), (2, 2))`; XLA:CPU runs this form
    (and its gradient) about 15% faster in the seed CNN's train step.
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even sides, got {h}x{w}")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
