"""What every FER-2013 layout maps onto: the label order, the split names and the face size.

Apart from `fer_jax.data.fer2013` (which loads the data with torch), so that inference reads them without it.
"""

from __future__ import annotations

from typing import Any

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Label order of the 2013 challenge CSV: index = label."""
SPLITS = ("Training", "PublicTest", "PrivateTest")
IMAGE_SIZE = 48


def as_nhwc(images: Any) -> Any:
    """(N, 1, 48, 48) torch layout (or (N, 48, 48)) to the (N, 48, 48, 1) layout of the Flax models (free for one
    channel): a JAX array or tracer in, the same kind out."""
    return images.reshape((images.shape[0], IMAGE_SIZE, IMAGE_SIZE, 1))
