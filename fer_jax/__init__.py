"""fer-jax: the classic FER-2013 facial-expression CNN in JAX/Flax NNX, with a PyTorch baseline to compare."""

from fer_jax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from fer_jax.data import EMOTIONS, SPLITS, DataError, load_fer2013

__version__ = "0.1.0"

__all__ = [
    "EMOTIONS",
    "SPLITS",
    "Config",
    "DataConfig",
    "DataError",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "load_fer2013",
]
