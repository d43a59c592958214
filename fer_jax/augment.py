"""The seed's augmentation in JAX, for the on-device input pipeline (`data.pipeline='device'`).

Same transform as `fer_jax.data.train_transform` (torchvision's RandomAffine with
nearest-neighbour sampling and zero fill, then RandomHorizontalFlip), computed as
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

from fer_jax.config import DataConfig

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
        "angle": jax.random.uniform(angle_key, (batch,), minval=-config.rotation_degrees,
                                    maxval=config.rotation_degrees),
        "scale": jax.random.uniform(scale_key, (batch,), minval=1 - config.zoom, maxval=1 + config.zoom),
        "shift": jnp.round(jax.random.uniform(shift_key, (batch, 2), minval=-max_shift, maxval=max_shift)),
        "flip": jax.random.bernoulli(flip_key, 0.5 if config.horizontal_flip else 0.0, (batch,)),
    }


def affine(images: jax.Array, angle: jax.Array, scale: jax.Array, shift: jax.Array, flip: jax.Array) -> jax.Array:
    """Rotate by `angle` degrees about the centre, zoom by `scale`, shift by (dx, dy), then mirror where `flip`.

    images: (batch, H, W) of any dtype; pixels that come from outside the image are 0.
    Each output pixel takes its nearest source pixel (torchvision's default, and
    one gather: no interpolation arithmetic on the critical path).
    """
    batch, height, width = images.shape
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) - (height - 1) / 2,
                          jnp.arange(width, dtype=jnp.float32) - (width - 1) / 2, indexing="ij")
    xs = jnp.where(flip[:, None, None], -xs, xs)
    ys = jnp.broadcast_to(ys, xs.shape)
    radians = angle * (math.pi / 180.0)
    cos, sin = (jnp.cos(radians) / scale)[:, None, None], (jnp.sin(radians) / scale)[:, None, None]
    dx, dy = xs - shift[:, 0, None, None], ys - shift[:, 1, None, None]
    source_x = jnp.round(cos * dx + sin * dy + (width - 1) / 2).astype(jnp.int32)
    source_y = jnp.round(-sin * dx + cos * dy + (height - 1) / 2).astype(jnp.int32)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    index = jnp.clip(source_y, 0, height - 1) * width + jnp.clip(source_x, 0, width - 1)
    pixels = jnp.take_along_axis(images.reshape(batch, -1), index.reshape(batch, -1), axis=1)
    return jnp.where(inside, pixels.reshape(batch, height, width), jnp.zeros((), images.dtype))


def sample_erasing(key: jax.Array, batch: int, height: int, width: int, probability: float) -> dict[str, jax.Array]:
    """Per-image rectangle (top, left, height, width) and whether to erase it, drawn as `v2.RandomErasing` draws them.

    Each image draws `ERASING_ATTEMPTS` (area, log aspect ratio) pairs at once and
    keeps the first whose rounded rectangle is smaller than the image on both sides.
    """
    apply_key, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    shape = (batch, ERASING_ATTEMPTS)
    area = height * width * jax.random.uniform(area_key, shape, minval=ERASING_SCALE[0], maxval=ERASING_SCALE[1])
    aspect = jnp.exp(jax.random.uniform(ratio_key, shape, minval=math.log(ERASING_RATIO[0]),
                                        maxval=math.log(ERASING_RATIO[1])))
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


def erase(images: jax.Array, top: jax.Array, left: jax.Array, height: jax.Array, width: jax.Array,
          active: jax.Array) -> jax.Array:
    """Set the rectangle [top, top + height) x [left, left + width) of each (batch, H, W) image to 0 where `active`."""
    rows = jnp.arange(images.shape[1])[None, :, None]
    cols = jnp.arange(images.shape[2])[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + height)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + width)[:, None, None]) & active[:, None, None])
    return jnp.where(inside, jnp.zeros((), images.dtype), images)


def augment(key: jax.Array, images: jax.Array, config: DataConfig) -> jax.Array:
    """A random draw of the configured augmentation applied to (batch, H, W) images: affine and flip, then erasing."""
    if not config.augment:
        return images
    batch, height, width = images.shape
    images = affine(images, **sample_params(key, batch, width, config))
    if config.erasing:  # its own key, so turning erasing on leaves the affine draws as they were
        images = erase(images, **sample_erasing(jax.random.fold_in(key, 1), batch, height, width, config.erasing))
    return images
