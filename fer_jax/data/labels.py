"""What every FER-2013 layout maps onto: the label order, the split names and the face size.

Apart from `fer_jax.data.fer2013` (which loads the data with torch), so that inference reads them without it.
"""

from __future__ import annotations

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Label order of the 2013 challenge CSV: index = label."""
SPLITS = ("Training", "PublicTest", "PrivateTest")
IMAGE_SIZE = 48
