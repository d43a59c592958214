"""Batch inference: the faces of many images (a folder, a video's frames) classified in fixed-size batches.

A jitted classifier compiles once per input shape. `probabilities` cuts any
number of faces into batches of BATCH_SIZE and pads the last one to the
smallest of BUCKETS that holds it, so a folder's faces run as full batches of
256 and any run compiles at most len(BUCKETS) shapes; `stream` carries the
faces of consecutive images into shared batches, so no image is classified
on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import cv2
import jax
import jax.numpy as jnp

from fer_jax.data.labels import IMAGE_SIZE

BATCH_SIZE = 256
BUCKETS = (8, 64, BATCH_SIZE)
"""The batch shapes the classifier ever sees."""
MAX_PENDING_ITEMS = 32
"""`stream` classifies at least every this many images (a video's frames wait in memory until then)."""

Item = TypeVar("Item")
Classify = Callable[[jax.Array], jax.Array]
"""(N, 48, 48) uint8 faces -> (N, 7) probabilities: `fer_jax.infer.predict.Classifier` or `OnnxClassifier`."""


def bucket(count: int) -> int:
    """The batch shape that `count` (at most BATCH_SIZE) faces are padded to."""
    return next(size for size in BUCKETS if size >= count)


def padded_batch(faces: Sequence[Any]) -> jax.Array:
    """Up to BATCH_SIZE 48x48 uint8 faces (OpenCV's arrays, or anything JAX reads) as one (B, 48, 48) uint8
    array, B = `bucket(len(faces))`, zeros after the faces. OpenCV stacks and pads them on the host, so the only
    program that runs is the classifier's own: no small JAX program to compile per face count."""
    rows = cv2.vconcat([jax.device_get(face) for face in faces])
    padding = (bucket(len(faces)) - len(faces)) * IMAGE_SIZE
    rows = cv2.copyMakeBorder(rows, 0, padding, 0, 0, cv2.BORDER_CONSTANT, value=0) if padding else rows
    return jnp.asarray(rows, jnp.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def probabilities(classifier: Classify, faces: Sequence[Any]) -> list[list[float]]:
    """The seven probabilities of each 48x48 uint8 face, computed in batches of BUCKETS' shapes."""
    out: list[list[float]] = []
    for start in range(0, len(faces), BATCH_SIZE):
        chunk = faces[start : start + BATCH_SIZE]
        out += classifier(padded_batch(chunk)).tolist()[: len(chunk)]
    return out


def stream(
    items: Iterable[tuple[Item, Sequence[Any]]], classifier: Classify, max_pending: int = MAX_PENDING_ITEMS
) -> Iterator[tuple[Item, list[list[float]]]]:
    """For each (item, its 48x48 faces), in order: (item, the faces' probabilities).

    Faces of consecutive items share batches: items wait until BATCH_SIZE faces
    or `max_pending` items are pending (or the input ends), then all of them
    are classified together and yielded.
    """
    pending: list[tuple[Item, Sequence[Any]]] = []
    count = 0
    for item, faces in items:
        pending.append((item, faces))
        count += len(faces)
        if count >= BATCH_SIZE or len(pending) >= max_pending:
            yield from _flush(pending, classifier)
            pending, count = [], 0
    yield from _flush(pending, classifier)


def _flush(pending: list[tuple[Item, Sequence[Any]]], classifier: Classify) -> Iterator[tuple[Item, list[list[float]]]]:
    results = probabilities(classifier, [face for _, faces in pending for face in faces])
    start = 0
    for item, faces in pending:
        yield item, results[start : start + len(faces)]
        start += len(faces)
