"""fer-jax: the classic FER-2013 facial-expression CNN in JAX/Flax NNX, with a PyTorch baseline to compare.

The names below load their modules on first use (PEP 562), so `import fer_jax` and `fer-jax --help` do not
pay for torch, torchvision, OpenCV and Flax until a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fer_jax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

if TYPE_CHECKING:
    from fer_jax.data.fer2013 import load_fer2013
    from fer_jax.data.labels import EMOTIONS, SPLITS
    from fer_jax.errors import DataError
    from fer_jax.infer.predict import Face, predict

__version__ = "0.1.0"

_LAZY = {
    "EMOTIONS": "fer_jax.data.labels",
    "SPLITS": "fer_jax.data.labels",
    "DataError": "fer_jax.errors",
    "load_fer2013": "fer_jax.data.fer2013",
    "Face": "fer_jax.infer.predict",
    "predict": "fer_jax.infer.predict",
}
"""Public name -> the module that defines it."""

__all__ = [
    "EMOTIONS",
    "SPLITS",
    "Config",
    "DataConfig",
    "DataError",
    "Face",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "load_fer2013",
    "predict",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fer_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
