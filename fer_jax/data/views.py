"""Test-time views of faces: the evaluation's 'flip' and 'crops' TTA, shared by `fer-jax evaluate` and `predict`.

A view maps a batch of faces (..., 48, 48) to another batch of the same shape:
`mirror` flips it left to right, `corner_crop` cuts a CROP_SIZE square at a corner and scales it back to
48x48. `view_list` gives the sets of views by name (TTA_CHOICES): 'none' (the face as it is), 'flip' (it and its
mirror, 2 views), 'crops' (those and the four corner crops of each, 10 views). It lives in the data layer, below
both the trainer's evaluation and `fer_jax.infer`, and imports only JAX, so the predict path stays free of the
trainer's modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from fer_jax.data.labels import IMAGE_SIZE
from fer_jax.errors import DataError

CROP_SIZE = 44
"""The 'crops' TTA's corner crops: 44x44 of 48x48, a zoom of 1.09, inside the training augmentation's range."""
TTA_CHOICES = ("none", "flip", "crops")
"""The test-time view sets, by name."""
DEFAULT_TTA = "flip"
"""`fer-jax predict`'s views: on PublicTest's 3,589 crops the shipped vgg_bn reads 0.6969 with flip against 0.6851
with one view and 0.6762 with crops (results/predict_views.json, `python -m experiments.predict_views`), for twice
the classifier's time; one view until 2026-12-07."""

View = Callable[[jax.Array], jax.Array] | None
"""A test-time view of a batch of (..., 48, 48) faces; None: the faces as they are."""


def mirror(images: jax.Array) -> jax.Array:
    """Horizontal flip of (..., H, W) faces."""
    return images[..., ::-1]


def corner_crop(top: int, left: int) -> Callable[[jax.Array], jax.Array]:
    """A view: the CROP_SIZE square at (top, left) of (..., 48, 48) float faces, scaled back to 48x48 (bilinear)."""

    def view(images: jax.Array) -> jax.Array:
        crop = images[..., top : top + CROP_SIZE, left : left + CROP_SIZE]
        return jax.image.resize(crop, (*images.shape[:-2], IMAGE_SIZE, IMAGE_SIZE), "bilinear")

    return view


def view_list(tta: str) -> list[View]:
    """The views of TTA set `tta` ('none', 'flip' or 'crops'), not jitted: the face itself first, then its mirror,
    then the four corner crops and the four of the mirror."""
    if tta not in TTA_CHOICES:
        raise DataError(f"unknown test-time views {tta!r}: choose one of {', '.join(TTA_CHOICES)}")
    views: list[View] = [None]
    if tta == "none":
        return views
    views.append(mirror)
    if tta == "flip":
        return views
    corners = [corner_crop(top, left) for top in (0, IMAGE_SIZE - CROP_SIZE) for left in (0, IMAGE_SIZE - CROP_SIZE)]
    return views + corners + [lambda x, corner=corner: corner(mirror(x)) for corner in corners]


@functools.cache
def uint8_views(tta: str) -> Callable[[jax.Array], jax.Array]:
    """One jitted function, the same for each `tta` (JAX traces it once per shape): (N, 48, 48) uint8 faces ->
    (V, N, 48, 48) uint8, the V views of `view_list(tta)`, each computed on the faces as floats and rounded back to
    8 bits (what every classifier takes)."""
    views = view_list(tta)

    def all_views(faces: jax.Array) -> jax.Array:
        floats = faces.astype(jnp.float32)
        stacked = jnp.stack([floats if view is None else view(floats) for view in views])
        return jnp.clip(jnp.round(stacked), 0, 255).astype(jnp.uint8)

    return jax.jit(all_views)
