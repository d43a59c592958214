"""The seed's augmentation in JAX, for the on-device input pipeline (`data.pipeline='device'`).

Same transform as `fer_jax.data.fer2013.train_transform` (torchvision's RandomAffine, by
default with nearest-neighbour sampling and zero fill, then RandomHorizontalFlip), computed as
one gather per batch inside the jitted train step, so a GPU is not fed by a
Python loop. With the same angle, scale, shift and flip it gives torchvision's
pixels (tests/test_augment.py); the random draws come from `jax.random`.
Random erasing (`data.erasing`) follows torchvision's `v2.RandomErasing`
(tests/test_recipe.py compares the two in distribution).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fer_jax.config import FILLS, INTERPOLATIONS, ConfigError, DataConfig

ERASING_SCALE = (0.02, 0.33)
"""Erased area as a fraction of the image (torchvision's RandomErasing default)."""
ERASING_RATIO = (0.3, 3.3)
"""Aspect ratio (height / width) of the erased rectangle, drawn log-uniformly (torchvision's default)."""
ERASING_ATTEMPTS = 10
"""Rectangles drawn per image until one fits inside it; none fits: nothing is erased (as torchvision)."""


def sample_params(key: jax.Array, batch: int, size: int, config: DataConfig) -> dict[str, jax.Array]:
    """Per-image angle (degrees), scale, integer shift (pixels) and flip, drawn as RandomAffine draws them."""
    angle_key, scale_key, shift_key, flip_key = jax.random.split(key, 4)
    max_shift = config.translate * size
    return {
        "angle": jax.random.uniform(
            angle_key, (batch,), minval=-config.rotation_degrees, maxval=config.rotation_degrees
        ),
        "scale": jax.random.uniform(scale_key, (batch,), minval=1 - config.zoom, maxval=1 + config.zoom),
        "shift": jnp.round(jax.random.uniform(shift_key, (batch, 2), minval=-max_shift, maxval=max_shift)),
        "flip": jax.random.bernoulli(flip_key, 0.5 if config.horizontal_flip else 0.0, (batch,)),
    }


def affine(
    images: jax.Array,
    angle: jax.Array,
    scale: jax.Array,
    shift: jax.Array,
    flip: jax.Array,
    interpolation: str = "nearest",
    fill: str = "zero",
) -> jax.Array:
    """Rotate by `angle` degrees about the centre, zoom by `scale`, shift by (dx, dy), then mirror where `flip`.

    images: (batch, H, W) of any dtype. `interpolation`: each output pixel takes its
    nearest source pixel ('nearest': torchvision's default, one gather) or the
    bilinear mix of four ('bilinear', rounded back to the input dtype as torchvision
    rounds). `fill`: pixels from outside the image are 0 ('zero') or the nearest
    border pixel ('edge').
    """
    check_choice("data.interpolation", interpolation, INTERPOLATIONS)
    check_choice("data.fill", fill, FILLS)
    batch, height, width = images.shape
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32) - (height - 1) / 2,
        jnp.arange(width, dtype=jnp.float32) - (width - 1) / 2,
        indexing="ij",
    )
    xs = jnp.where(flip[:, None, None], -xs, xs)
    ys = jnp.broadcast_to(ys, xs.shape)
    radians = angle * (math.pi / 180.0)
    cos, sin = (jnp.cos(radians) / scale)[:, None, None], (jnp.sin(radians) / scale)[:, None, None]
    dx, dy = xs - shift[:, 0, None, None], ys - shift[:, 1, None, None]
    source_x = cos * dx + sin * dy + (width - 1) / 2
    source_y = -sin * dx + cos * dy + (height - 1) / 2
    flat = images.reshape(batch, -1)

    def sample(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pixels at integer (x, y), clamped to the border, and whether (x, y) lies inside the image."""
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        index = jnp.clip(y, 0, height - 1) * width + jnp.clip(x, 0, width - 1)
        pixels = jnp.take_along_axis(flat, index.reshape(batch, -1), axis=1).reshape(batch, height, width)
        return pixels, inside if fill == "zero" else jnp.ones_like(inside)

    if interpolation == "nearest":
        pixels, inside = sample(jnp.round(source_x).astype(jnp.int32), jnp.round(source_y).astype(jnp.int32))
        return jnp.where(inside, pixels, jnp.zeros((), images.dtype))
    left, top = jnp.floor(source_x), jnp.floor(source_y)
    weight_x, weight_y = source_x - left, source_y - top
    left, top = left.astype(jnp.int32), top.astype(jnp.int32)
    value = jnp.zeros(source_x.shape, jnp.float32)
    coverage = jnp.zeros(source_x.shape, jnp.float32)
    for x, y, weight in (
        (left, top, (1 - weight_x) * (1 - weight_y)),
        (left + 1, top, weight_x * (1 - weight_y)),
        (left, top + 1, (1 - weight_x) * weight_y),
        (left + 1, top + 1, weight_x * weight_y),
    ):
        pixels, inside = sample(x, y)
        weight = jnp.where(inside, weight, 0.0)
        value = value + weight * pixels.astype(jnp.float32)
        coverage = coverage + weight
    # torchvision's bilinear fill: the zero-padded mix times the zero-padded mix of a mask of ones.
    mixed = value * coverage if fill == "zero" else value
    return jnp.round(mixed).astype(images.dtype) if jnp.issubdtype(images.dtype, jnp.integer) else mixed


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def sample_erasing(key: jax.Array, batch: int, height: int, width: int, probability: float) -> dict[str, jax.Array]:
    """Per-image rectangle (top, left, height, width) and whether to erase it, drawn as `v2.RandomErasing` draws them.

    Each image draws `ERASING_ATTEMPTS` (area, log aspect ratio) pairs at once and
    keeps the first whose rounded rectangle is smaller than the image on both sides.
    """
    apply_key, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    shape = (batch, ERASING_ATTEMPTS)
    area = height * width * jax.random.uniform(area_key, shape, minval=ERASING_SCALE[0], maxval=ERASING_SCALE[1])
    aspect = jnp.exp(
        jax.random.uniform(ratio_key, shape, minval=math.log(ERASING_RATIO[0]), maxval=math.log(ERASING_RATIO[1]))
    )
    heights = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    widths = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (heights < height) & (widths < width)
    first = jnp.argmax(fits, axis=1)[:, None]
    rect_height = jnp.take_along_axis(heights, first, axis=1)[:, 0]
    rect_width = jnp.take_along_axis(widths, first, axis=1)[:, 0]
    # Uniform integers in [0, side - rect]: torch.randint(0, side - rect + 1).
    top = jnp.floor(jax.random.uniform(top_key, (batch,)) * (height - rect_height + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(left_key, (batch,)) * (width - rect_width + 1)).astype(jnp.int32)
    return {
        "top": jnp.minimum(top, height - rect_height),
        "left": jnp.minimum(left, width - rect_width),
        "height": rect_height,
        "width": rect_width,
        "active": jax.random.bernoulli(apply_key, probability, (batch,)) & fits.any(axis=1),
    }


def erase(
    images: jax.Array, top: jax.Array, left: jax.Array, height: jax.Array, width: jax.Array, active: jax.Array
) -> jax.Array:
    """Set the rectangle [top, top + height) x [left, left + width) of each (batch, H, W) image to 0 where `active`."""
    rows = jnp.arange(images.shape[1])[None, :, None]
    cols = jnp.arange(images.shape[2])[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + height)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + width)[:, None, None])
        & active[:, None, None]
    )
    return jnp.where(inside, jnp.zeros((), images.dtype), images)


def augment(key: jax.Array, images: jax.Array, config: DataConfig) -> jax.Array:
    """A random draw of the configured augmentation applied to (batch, H, W) images: affine and flip, then erasing."""
    if not config.augment:
        return images
    batch, height, width = images.shape
    images = affine(
        images, **sample_params(key, batch, width, config), interpolation=config.interpolation, fill=config.fill
    )
    if config.erasing:  # its own key, so turning erasing on leaves the affine draws as they were
        images = erase(images, **sample_erasing(jax.random.fold_in(key, 1), batch, height, width, config.erasing))
    return images
