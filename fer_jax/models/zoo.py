"""Flax NNX models for 48x48 grayscale faces, selected by `ModelConfig.name`.

- `seed_cnn`: the classic FER-2013 Keras network (VALID 3x3 convolutions, as
  Keras' and PyTorch's defaults), so its weights port one-to-one to the
  PyTorch baseline.
- `vgg_bn`: the VGG variant with BatchNorm of Khaireddin & Chen (2021).
- `resnet18`: ResNet-18 with a 3x3 stem and no stem pooling, for 48x48 inputs.

Every model takes (batch, 48, 48, 1) floats in [0, 1] and returns 7 float32
logits (softmax in the loss). Dropout draws from the `dropout` stream of the
`rngs` passed to `__call__`, so modules hold no random state. BatchNorm
statistics are `nnx.BatchStat` state: updated in training mode, used in eval
mode. `compute_dtype='bfloat16'` runs the layers in bfloat16 over float32
weights (GPUs, and CPUs with AMX or AVX512-BF16: what 'auto' picks there);
BatchNorm statistics, logits and loss stay float32.
"""

import functools
from collections.abc import Callable

import jax
from flax import nnx

from fer_jax.config import SMALLEST_CROP, WIDTH_SCALABLE, ConfigError, ModelConfig
from fer_jax.models.layers import IMAGE_SIZE, compute_dtype_of
from fer_jax.models.resnet import ResNet18
from fer_jax.models.seed_cnn import SeedCNN
from fer_jax.models.vgg_bn import VGGBN

MODELS: dict[str, type[nnx.Module]] = {"seed_cnn": SeedCNN, "vgg_bn": VGGBN, "resnet18": ResNet18}
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
"""XLA options of the program that draws the initial weights (`create_model`)."""


def create_model(config: ModelConfig, seed: int | jax.Array) -> nnx.Module:
    """Build the model named by `config.name` with weights drawn from `seed` (an int, or a typed key)."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r}; choose one of {sorted(MODELS)}")
    compute_dtype_of(config.compute_dtype)  # a bad name fails here, before any weights are drawn
    if config.width <= 0 or (config.width != 1.0 and config.name not in WIDTH_SCALABLE):
        raise ConfigError(
            f"model.width {config.width} is not available for {config.name!r}: "
            f"a positive multiplier for {' or '.join(WIDTH_SCALABLE)}, 1 for the others"
        )
    if config.input_crop and (config.name not in WIDTH_SCALABLE or not SMALLEST_CROP <= config.input_crop < IMAGE_SIZE):
        raise ConfigError(
            f"model.input_crop {config.input_crop} is not available for {config.name!r}: "
            f"0 (the whole face), or {SMALLEST_CROP}-{IMAGE_SIZE - 1} for {' or '.join(WIDTH_SCALABLE)}"
        )
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    if isinstance(key, jax.core.Tracer):  # inside a caller's jit or eval_shape: the draws join that program
        return _build(config.name, config.width, config.input_crop, config.compute_dtype, key)
    draw, structure = _initializer(config.name, config.width, config.input_crop, config.compute_dtype)
    state = draw(key)
    return nnx.merge(structure[0], state)


@functools.cache
def _initializer(
    name: str, width: float, input_crop: int, compute_dtype: str
) -> tuple[Callable[[jax.Array], nnx.State], list]:
    """The compiled program that draws a model's initial weights from a key, and (filled when it is traced) the
    model's structure to merge them into.

    One program for every seed (the key is an argument), built once per process: eagerly, each initializer op
    was compiled on its own (about a hundred small compilations, too short for JAX's persistent cache). It is
    compiled unoptimised (INIT_COMPILER_OPTIONS): it runs once, and XLA's optimisation of the random-number
    code took 4-13 CPU-s for a program that compiles in 0.5-2 s without it. The weights differ from the
    optimised program's by at most one float32 rounding step (6e-8 to 9e-8, in about 4% of them).
    """
    structure: list = []

    def draw(key: jax.Array) -> nnx.State:
        graphdef, state = nnx.split(_build(name, width, input_crop, compute_dtype, key))
        structure[:] = [graphdef]
        return state

    return jax.jit(draw, compiler_options=INIT_COMPILER_OPTIONS), structure


def _build(name: str, width: float, input_crop: int, compute_dtype: str, key: jax.Array) -> nnx.Module:
    sizes = {"width": width, "input_crop": input_crop} if name in WIDTH_SCALABLE else {}
    return MODELS[name](rngs=nnx.Rngs(params=key), compute_dtype=compute_dtype, **sizes)


def model_skeleton(config: ModelConfig) -> nnx.Module:
    """The model of `config` with abstract weights (shapes and dtypes only: nothing compiled or drawn), to load
    trained weights into with `nnx.update`."""
    return nnx.eval_shape(lambda: create_model(config, seed=0))


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
