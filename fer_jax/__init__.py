"""fer-jax: the classic FER-2013 facial-expression CNN in JAX/Flax NNX, with a PyTorch baseline to compare."""

from fer_jax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from fer_jax.data.fer2013 import EMOTIONS, SPLITS, DataError, load_fer2013

# Imported eagerly on purpose: the function shares its module's name, and a lazy module-level
# __getattr__ would be shadowed by the submodule once anything imports `fer_jax.infer.predict`
# (OpenCV and Flax add about a second to `import fer_jax`, which already loads torch and JAX).
from fer_jax.infer.predict import Face, predict

__version__ = "0.1.0"

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
