"""Looking inside a trained seed CNN: its weights from a run folder, first-layer filters, feature maps,
saliency maps (the gradient of a class logit with respect to the input face) and the most confused classes.

Images are float faces in [0, 1] in any of the layouts `fer_jax.data.fer2013.as_nhwc` accepts:
(N, 1, 48, 48) as `fer_jax.data.fer2013.eval_batches` yields them, (N, 48, 48) or (N, 48, 48, 1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.config import Config
from fer_jax.data.fer2013 import EMOTIONS, as_nhwc
from fer_jax.models.layers import max_pool_2x2
from fer_jax.models.seed_cnn import SeedCNN
from fer_jax.models.zoo import model_skeleton
from fer_jax.train.eval_step import EvalStep, Weights, build_eval_step
from fer_jax.train.restore import restore_weights

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4")


def load_run(run_dir: str | Path, which: str = "best") -> tuple[Config, Weights, EvalStep]:
    """A run's config (run_dir set to `run_dir`), the weights of its `which` checkpoint ('best' or 'latest') and
    the jitted eval step."""
    config, weights, _ = restore_weights(run_dir, which)
    return config, weights, build_eval_step(config.model, config.train.devices)


def model_from_state(config: Config, weights: Weights) -> nnx.Module:
    """The NNX model of `config.model` holding `weights` (a checkpoint's, or `TrainState.weights`), in eval mode
    (no dropout)."""
    model = model_skeleton(config.model)
    nnx.update(model, weights["params"], weights["model_state"])
    model.eval()
    return model


def first_layer_filters(model: SeedCNN) -> jax.Array:
    """conv1's kernels as (32, 3, 3): one 3x3 filter per output channel (the input is one gray channel)."""
    kernel = model.conv1.kernel[...]  # HWIO (3, 3, 1, 32)
    return jnp.transpose(kernel[:, :, 0, :], (2, 0, 1))


def feature_maps(model: SeedCNN, images: jax.Array) -> dict[str, jax.Array]:
    """The ReLU outputs of conv1..conv4 (NHWC: 46x46x32, 44x44x64, 20x20x128, 8x8x128) and the 'logits'.

    Follows `SeedCNN.__call__` in eval mode (dropout is the identity there); the
    returned logits equal `model(images)` (tested), so the maps are the model's own.
    """
    x = as_nhwc(jnp.asarray(images, jnp.float32))
    maps = {}
    x = maps["conv1"] = nnx.relu(model.conv1(x))
    x = maps["conv2"] = nnx.relu(model.conv2(x))
    x = maps["conv3"] = nnx.relu(model.conv3(max_pool_2x2(x)))
    x = maps["conv4"] = nnx.relu(model.conv4(max_pool_2x2(x)))
    x = max_pool_2x2(x).reshape(x.shape[0], -1)
    maps["logits"] = model.dense2(nnx.relu(model.dense1(x)))
    return maps


def saliency_maps(model: nnx.Module, images: jax.Array, classes: jax.Array | Sequence[int] | None = None) -> jax.Array:
    """|d logit[class] / d input| per pixel, in the shape of `images` (Simonyan et al., 2014).

    `classes`: the class whose logit is differentiated, per image (default: the
    predicted one). The model is put in eval mode (no dropout), so each image's
    map depends on that image only.
    """
    model.eval()
    images = jnp.asarray(images, jnp.float32)
    if classes is None:
        classes = jnp.full((images.shape[0],), -1, jnp.int32)
    graphdef, state = nnx.split(model)
    return _saliency(graphdef, state, images, jnp.asarray(classes, jnp.int32).reshape(-1))


@functools.partial(jax.jit, static_argnums=0)
def _saliency(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array, classes: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    predicted = jnp.argmax(model(as_nhwc(images)), axis=-1)
    chosen = jnp.where(classes < 0, predicted, classes)[:, None]  # -1: the predicted class

    def class_logits(x: jax.Array) -> jax.Array:
        return jnp.take_along_axis(model(as_nhwc(x)), chosen, axis=-1).sum()

    return jnp.abs(jax.grad(class_logits)(images))


def most_confused_pairs(matrix: jax.Array | Sequence[Sequence[int]], top: int = 5) -> list[dict[str, Any]]:
    """The `top` off-diagonal cells of a confusion matrix (row = true, column = predicted), most counts first.

    Each: {'true', 'predicted', 'count', 'share_of_true'} (the count over all faces of the true class).
    """
    rows = jnp.asarray(matrix).tolist()
    pairs = []
    for i, row in enumerate(rows):
        total = sum(row)
        for j, count in enumerate(row):
            if i != j and count:
                pairs.append(
                    {"true": EMOTIONS[i], "predicted": EMOTIONS[j], "count": int(count), "share_of_true": count / total}
                )
    pairs.sort(key=lambda pair: (-pair["count"], -pair["share_of_true"]))
    return pairs[:top]
