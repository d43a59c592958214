import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from fer_jax.config import ModelConfig
from fer_jax.models import count_params, create_model, im2col_conv, max_pool_2x2

# conv1 320 + conv2 18,496 + conv3 73,856 + conv4 147,584 + dense1 2,098,176 + dense2 7,175
SEED_CNN_PARAMS = 2_345_607


def test_seed_cnn_shape_and_parameter_count():
    model = create_model(ModelConfig(), seed=0)
    model.eval()
    logits = model(jnp.zeros((3, 48, 48, 1)))
    assert logits.shape == (3, 7)
    assert count_params(model) == SEED_CNN_PARAMS


def test_im2col_matches_xla_convolution():
    lhs = jax.random.normal(jax.random.key(0), (2, 10, 12, 5))
    rhs = jax.random.normal(jax.random.key(1), (3, 3, 5, 4))
    expected = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert jnp.allclose(im2col_conv(lhs, rhs, (1, 1), "VALID"), expected, atol=1e-4)


def test_conv_implementations_give_the_same_network():
    x = jax.random.uniform(jax.random.key(2), (2, 48, 48, 1))
    outputs = []
    for impl in ("im2col", "xla"):
        model = create_model(ModelConfig(conv_impl=impl), seed=0)
        model.eval()
        outputs.append(model(x))
    assert jnp.allclose(outputs[0], outputs[1], atol=1e-4)


def test_max_pool_matches_flax():
    x = jax.random.normal(jax.random.key(3), (2, 8, 6, 3))
    assert jnp.array_equal(max_pool_2x2(x), nnx.max_pool(x, (2, 2), (2, 2)))


def test_dropout_only_in_training_and_seeded():
    model = create_model(ModelConfig(), seed=0)
    x = jnp.ones((2, 48, 48, 1))
    model.train()
    a = model(x, rngs=nnx.Rngs(dropout=1))
    b = model(x, rngs=nnx.Rngs(dropout=1))
    c = model(x, rngs=nnx.Rngs(dropout=2))
    assert jnp.array_equal(a, b) and not jnp.array_equal(a, c)
    model.eval()
    assert jnp.array_equal(model(x), model(x))


def test_unknown_model_is_a_config_error():
    with pytest.raises(ValueError, match="unknown model"):
        create_model(ModelConfig(name="resnet9000"), seed=0)
