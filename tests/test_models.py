"""The model zoo: shapes, parameter counts, the CPU kernels inside whole networks, BatchNorm state, dropout,
bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fer_jax.config import Config, ConfigError, ModelConfig
from fer_jax.models.layers import Dropout
from fer_jax.models.resnet import ResNet18
from fer_jax.models.seed_cnn import SeedCNN
from fer_jax.models.vgg_bn import VGGBN
from fer_jax.models.zoo import MODELS, count_params, create_model
from fer_jax.train.steps import init_state

# conv1 320 + conv2 18,496 + conv3 73,856 + conv4 147,584 + dense1 2,098,176 + dense2 7,175
SEED_CNN_PARAMS = 2_345_607
# 8 bias-free 3x3 convs 4,682,304 + their BatchNorms 3,840 + dense 18,878,464 + 16,781,312 + 28,679
VGG_BN_PARAMS = 40_374_599
# stem conv-BN 704 + 8 basic blocks (3 with a 1x1 conv-BN shortcut) 11,166,976 + classifier 3,591
RESNET18_PARAMS = 11_171_271
PARAMS = {"seed_cnn": SEED_CNN_PARAMS, "vgg_bn": VGG_BN_PARAMS, "resnet18": RESNET18_PARAMS}


def faces(batch: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, 48, 48, 1))


@nnx.jit
def forward(model: nnx.Module, images: jax.Array) -> jax.Array:
    return model(images)


@nnx.jit
def forward_with_dropout(model: nnx.Module, images: jax.Array, rngs: nnx.Rngs) -> jax.Array:
    return model(images, rngs=rngs)


def eval_logits(model: nnx.Module, images: jax.Array) -> jax.Array:
    model.eval()
    return forward(model, images)


@pytest.mark.slow
def test_initial_weights_are_the_seeds_draws_up_to_one_rounding_step():
    """create_model draws in one unoptimised program shared by every seed: the same seed gives the same weights,
    another seed others, and they are the draws of the module built directly, to within float32 rounding."""

    def weights(model: nnx.Module) -> list[np.ndarray]:
        return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]

    first, again, other = (weights(create_model(ModelConfig(), seed)) for seed in (3, 3, 4))
    direct = weights(nnx.jit(lambda: SeedCNN(rngs=nnx.Rngs(params=3)))())  # XLA's default optimisation
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not any((a == b).all() for a, b in zip(first, other, strict=True) if a.ndim > 1)
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, direct, strict=True)) < 2e-7


def test_seed_cnn_shape_and_parameter_count():
    model = create_model(ModelConfig(), seed=0)
    model.eval()
    logits = model(jnp.zeros((3, 48, 48, 1)))
    assert logits.shape == (3, 7)
    assert count_params(model) == SEED_CNN_PARAMS


@pytest.mark.slow
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_is_selectable_by_name_with_its_shape_and_size(name: str, compute_dtype: str):
    config = ModelConfig(name=name, compute_dtype=compute_dtype)
    model = nnx.eval_shape(lambda: create_model(config, seed=0))  # shapes only: nothing drawn or run

    def built_and_evaluated(images: jax.Array) -> jax.Array:
        model = create_model(config, seed=0)
        model.eval()
        return model(images)

    logits = jax.eval_shape(built_and_evaluated, jax.ShapeDtypeStruct((3, 48, 48, 1), jnp.float32))
    print(f"{name}: {count_params(model):,} parameters")
    assert isinstance(model, MODELS[name])
    assert (logits.shape, logits.dtype) == ((3, 7), jnp.float32)
    assert count_params(model) == PARAMS[name]
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_dropout_only_in_training_and_seeded(name: str):
    model = create_model(ModelConfig(name=name), seed=0)
    x = faces(2)
    model.train()
    a = forward_with_dropout(model, x, nnx.Rngs(dropout=1))
    b = forward_with_dropout(model, x, nnx.Rngs(dropout=1))
    c = forward_with_dropout(model, x, nnx.Rngs(dropout=2))
    assert jnp.array_equal(a, b) and not jnp.array_equal(a, c)
    assert jnp.array_equal(eval_logits(model, x), eval_logits(model, x))


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_byte_dropout_keeps_each_element_with_probability_one_minus_rate(rate: float):
    dropout = Dropout(rate)
    x = jnp.ones((64, 22, 22, 16))
    out = dropout(x, rngs=nnx.Rngs(dropout=0))
    kept = out != 0
    assert jnp.allclose(out[kept], 1.0 / (1.0 - rate))
    assert abs(float(kept.mean()) - (1.0 - rate)) < 0.005  # 495,616 draws: 6 standard deviations
    per_channel = kept.mean(axis=(0, 1, 2))  # no byte lane of the 32-bit draws is biased
    assert float(jnp.abs(per_channel - (1.0 - rate)).max()) < 0.02
    assert not jnp.array_equal(out, dropout(x, rngs=nnx.Rngs(dropout=1)))
    assert jnp.array_equal(dropout(x, deterministic=True, rngs=nnx.Rngs(dropout=0)), x)


@pytest.mark.slow
def test_byte_dropout_leaves_other_rates_to_flax():
    x = jax.random.normal(jax.random.key(0), (8, 10))
    assert jnp.array_equal(Dropout(0.2)(x, rngs=nnx.Rngs(dropout=3)), nnx.Dropout(0.2)(x, rngs=nnx.Rngs(dropout=3)))


@pytest.mark.slow
def test_batch_norm_statistics_update_in_the_train_step_and_serve_eval():
    """One `fer_jax.train.steps` train step moves every running statistic with momentum 0.9 (PyTorch's 0.1);
    evaluation then normalises with them: each image's logits are the same whatever batch it is in."""
    config = Config()
    config.apply_overrides(["model.name=resnet18", "train.batch_size=4", "train.eval_batch_size=4"])
    state, steps = init_state(config, steps_per_epoch=1)
    images = faces(4).reshape(4, 1, 48, 48)
    labels = jnp.arange(4)
    model = create_model(config.model, seed=0)
    nnx.update(model, state.params, state.model_state)
    stem_output = model.stem.conv(faces(4))  # what the first BatchNorm normalises in the step
    before = jax.tree.map(jnp.copy, nnx.to_pure_dict(state.model_state))

    state, _ = steps.train(state, images, labels)

    after = nnx.to_pure_dict(state.model_state)
    assert all(not jnp.allclose(old, new) for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert jnp.allclose(after["stem"]["norm"]["mean"], 0.1 * stem_output.mean(axis=(0, 1, 2)), atol=1e-5)
    assert jnp.allclose(after["stem"]["norm"]["var"], 0.9 + 0.1 * stem_output.var(axis=(0, 1, 2)), atol=1e-5)

    nnx.update(model, state.params, state.model_state)
    logits = eval_logits(model, faces(4))
    in_other_company = eval_logits(model, faces(4, seed=1).at[0].set(faces(4)[0]))
    assert jnp.allclose(in_other_company[0], logits[0], atol=1e-5)
    assert not jnp.allclose(in_other_company[1], logits[1], atol=1e-5)
    assert jnp.array_equal(logits, eval_logits(model, faces(4)))
    predictions = steps.eval(state.weights, images, labels, jnp.ones(4, bool))["predictions"]
    assert jnp.array_equal(predictions, logits.argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_gives_float32_logits_close_to_float32(name: str):
    x = faces(2)
    full, half = (
        eval_logits(create_model(ModelConfig(name=name, compute_dtype=dtype), seed=0), x)
        for dtype in ("float32", "bfloat16")
    )
    assert half.dtype == jnp.float32
    assert jnp.abs(half - full).max() <= 0.05 * jnp.abs(full).max()
    assert not jnp.array_equal(half, full)  # it did compute in bfloat16


@pytest.mark.slow
def test_a_bfloat16_train_step_keeps_weights_optimizer_state_statistics_and_loss_in_float32():
    config = Config()
    config.apply_overrides(["model.name=vgg_bn", "model.width=0.125", "model.compute_dtype=bfloat16"])
    state, steps = init_state(config, steps_per_epoch=10)
    images, labels = faces(4), jnp.arange(4) % 7
    state, metrics = steps.train(state, images, labels)
    floats = jax.tree.leaves((state.params, state.opt_state, state.model_state))
    assert {leaf.dtype for leaf in floats if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    assert metrics["loss"].dtype == jnp.float32
    logits = steps.eval(state.weights, images, labels, jnp.ones(4, bool))["logits"]
    assert logits.dtype == jnp.float32
    hlo = jax.jit(steps.train).lower(state, images, labels).as_text()
    assert "bf16" in hlo and "convolution" in hlo  # the layers did compute in bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg_bn", "resnet18"])
def test_input_crop_reads_only_the_central_square(name: str):
    model = create_model(ModelConfig(name=name, width=0.125, input_crop=40), seed=0)
    images = faces(2)
    border = jnp.ones((48, 48, 1), bool).at[4:44, 4:44].set(False)
    other_border = jnp.where(border, faces(2, seed=1), images)
    other_inside = images.at[:, 4, 4].add(0.5)  # the crop's first pixel (resnet18's strided shortcuts keep it)
    logits, with_other_border, with_other_inside = (eval_logits(model, x) for x in (images, other_border, other_inside))
    assert jnp.array_equal(logits, with_other_border)
    assert not jnp.allclose(logits, with_other_inside)
    if name == "vgg_bn":  # 40 -> 20 -> 10 -> 5 -> 2: a 2x2x64 flatten at width 1/8
        assert model.dense1.in_features == 2 * 2 * 64


@pytest.mark.parametrize("name, side", [("seed_cnn", 40), ("vgg_bn", 48), ("resnet18", 15)])
def test_an_input_crop_the_model_cannot_take_is_a_config_error(name: str, side: int):
    with pytest.raises(ConfigError, match=f"model.input_crop {side} is not available for '{name}'"):
        create_model(ModelConfig(name=name, input_crop=side), seed=0)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ValueError, match="unknown model"):
        create_model(ModelConfig(name="resnet9000"), seed=0)


def test_unknown_compute_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown compute_dtype"):
        create_model(ModelConfig(name="resnet18", compute_dtype="float16"), seed=0)


def test_model_classes_are_registered_under_their_names():
    assert {"seed_cnn": SeedCNN, "vgg_bn": VGGBN, "resnet18": ResNet18} == MODELS
