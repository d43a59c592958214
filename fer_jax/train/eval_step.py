"""The eval step of a model configuration: weights and a batch in, loss, hits and logits out.

Apart from the train steps, so evaluation and inference restore weights and run this step without
building an optimizer, a schedule or a train step. `build_eval_step` keeps one jitted step per model
configuration and process.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fer_jax.config import ModelConfig
from fer_jax.data.labels import as_nhwc
from fer_jax.models.zoo import model_skeleton
from fer_jax.train import parallel

Weights = dict[str, nnx.State]
"""{'params': ..., 'model_state': ...}: the parameters and BatchNorm statistics of a model."""
Metrics = dict[str, jax.Array]
EvalStep = Callable[[Weights, jax.Array, jax.Array, jax.Array], Metrics]
_EVAL_STEPS: dict[str, EvalStep] = {}


def make_eval_step(eval_graph: nnx.GraphDef) -> EvalStep:
    """(weights, images, labels, mask) -> summed loss and correct of the unmasked images, their count, and every
    image's prediction and logits."""

    def eval_step(weights: Weights, images: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
        model = nnx.merge(eval_graph, weights["params"], weights["model_state"])
        logits = model(as_nhwc(images))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predictions = jnp.argmax(logits, -1)
        return {
            "loss": jnp.sum(jnp.where(mask, losses, 0.0)),
            "correct": jnp.sum((predictions == labels) & mask),
            "count": jnp.sum(mask),
            "predictions": predictions,
            "logits": logits,
        }

    return eval_step


def build_eval_step(model: ModelConfig, devices: int = 0) -> EvalStep:
    """The jitted, mesh-sharded eval step of a model configuration: built once per process and configuration."""
    cache_key = json.dumps([dataclasses.asdict(model), devices], sort_keys=True)
    if cache_key not in _EVAL_STEPS:
        mesh = parallel.make_mesh(devices)
        skeleton = model_skeleton(model)
        skeleton.eval()
        jit_eval = jax.jit(make_eval_step(nnx.graphdef(skeleton)), **parallel.gather_outputs(mesh))

        def sharded_eval(weights: Weights, *batch: jax.Array) -> Metrics:
            weights = jax.device_put(weights, parallel.replicated(mesh))  # a no-op once they are there
            return parallel.to_first_device(mesh, jit_eval(weights, *parallel.shard_batch(mesh, *batch)))

        _EVAL_STEPS[cache_key] = sharded_eval
    return _EVAL_STEPS[cache_key]
