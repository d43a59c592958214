"""The CPU convolution kernels and the 2x2 max-pool against XLA's and Flax's: values and gradients."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from fer_jax.models import conv as conv_module
from fer_jax.models.conv import im2col_conv, max_pool_2x2, winograd_conv

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [
        (3, 1, "VALID"),  # seed_cnn
        (3, 1, [(1, 1), (1, 1)]),  # vgg_bn, resnet18 (PyTorch's padding=1)
        (3, 2, [(1, 1), (1, 1)]),  # resnet18's downsampling blocks
        (1, 2, [(0, 0), (0, 0)]),  # resnet18's projection shortcuts
        (3, 1, "SAME"),
        (3, 2, "SAME"),
        (3, 1, [(0, 1), (2, 0)]),
    ],
)
@pytest.mark.slow
def test_im2col_matches_xla_convolution_and_its_gradients(kernel, stride, padding):
    lhs = jax.random.normal(jax.random.key(0), (2, 11, 12, 5))  # an odd and an even side
    rhs = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 4))

    def xla(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, (stride, stride), padding, dimension_numbers=NHWC_HWIO)

    def im2col(lhs, rhs):
        return im2col_conv(lhs, rhs, (stride, stride), padding)

    expected = xla(lhs, rhs)
    assert im2col(lhs, rhs).shape == expected.shape
    assert jnp.allclose(im2col(lhs, rhs), expected, atol=1e-4)
    cotangent = jax.random.normal(jax.random.key(2), expected.shape)
    expected_grads = jax.vjp(xla, lhs, rhs)[1](cotangent)
    for got, want in zip(jax.vjp(im2col, lhs, rhs)[1](cotangent), expected_grads):
        assert jnp.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_images", [1, 2, 3])
def test_im2col_in_batch_chunks_matches_xla_convolution_and_its_gradients(monkeypatch, chunk_images):
    """Large patch matrices are built a few images at a time; values and gradients stay the same."""
    lhs = jax.random.normal(jax.random.key(0), (6, 10, 10, 3))
    rhs = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    monkeypatch.setattr(conv_module, "IM2COL_CHUNK_BYTES", chunk_images * 8 * 8 * 27 * 4)

    def xla(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=NHWC_HWIO)

    def im2col(lhs, rhs):
        return im2col_conv(lhs, rhs, (1, 1), "VALID")

    jaxpr = str(jax.make_jaxpr(im2col)(lhs, rhs))
    assert "scan" in jaxpr and f"f32[{chunk_images},10,10,3]" in jaxpr  # a lax.map over chunks of that many images
    assert jnp.allclose(im2col(lhs, rhs), xla(lhs, rhs), atol=1e-4)
    cotangent = jax.random.normal(jax.random.key(2), (6, 8, 8, 4))
    for got, want in zip(jax.vjp(im2col, lhs, rhs)[1](cotangent), jax.vjp(xla, lhs, rhs)[1](cotangent)):
        assert jnp.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["VALID", "SAME", [(1, 1), (1, 1)], [(0, 1), (2, 0)]])
@pytest.mark.parametrize("shape", [(2, 11, 12, 16), (3, 8, 7, 20)])  # odd and even output sides
def test_winograd_matches_xla_convolution_and_its_gradients(shape, padding):
    lhs = jax.random.normal(jax.random.key(0), shape)
    rhs = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 6))

    def xla(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dimension_numbers=NHWC_HWIO)

    def winograd(lhs, rhs):
        return winograd_conv(lhs, rhs, (1, 1), padding)

    assert "dot_general" in str(jax.make_jaxpr(winograd)(lhs, rhs))  # the transformed tiles' matmuls, no conv
    assert "conv_general_dilated" not in str(jax.make_jaxpr(winograd)(lhs, rhs))
    expected = xla(lhs, rhs)
    assert winograd(lhs, rhs).shape == expected.shape
    assert jnp.allclose(winograd(lhs, rhs), expected, rtol=1e-4, atol=1e-4)
    cotangent = jax.random.normal(jax.random.key(2), expected.shape)
    for got, want in zip(jax.vjp(winograd, lhs, rhs)[1](cotangent), jax.vjp(xla, lhs, rhs)[1](cotangent)):
        assert jnp.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_images", [1, 2, 3])
def test_winograd_in_batch_chunks_matches_xla_convolution_and_its_gradients(monkeypatch, chunk_images):
    lhs = jax.random.normal(jax.random.key(0), (6, 10, 10, 16))
    rhs = jax.random.normal(jax.random.key(1), (3, 3, 16, 4))
    monkeypatch.setattr(conv_module, "IM2COL_CHUNK_BYTES", chunk_images * 16 * 4 * 4 * 16 * 4)  # 4x4 tiles

    def xla(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=NHWC_HWIO)

    def winograd(lhs, rhs):
        return winograd_conv(lhs, rhs, (1, 1), "VALID")

    jaxpr = str(jax.make_jaxpr(winograd)(lhs, rhs))
    assert "scan" in jaxpr and f"f32[{chunk_images},10,10,16]" in jaxpr
    assert jnp.allclose(winograd(lhs, rhs), xla(lhs, rhs), rtol=1e-4, atol=1e-4)
    cotangent = jax.random.normal(jax.random.key(2), (6, 8, 8, 4))
    for got, want in zip(jax.vjp(winograd, lhs, rhs)[1](cotangent), jax.vjp(xla, lhs, rhs)[1](cotangent)):
        assert jnp.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("in_features", "kernel", "stride"),
    [(1, 3, 1), (15, 3, 1), (16, 3, 2), (16, 1, 1)],  # seed_cnn's conv1, few channels, strided, 1x1
)
@pytest.mark.slow
def test_winograd_leaves_other_convolutions_to_im2col(in_features, kernel, stride):
    lhs = jax.random.normal(jax.random.key(0), (2, 9, 9, in_features))
    rhs = jax.random.normal(jax.random.key(1), (kernel, kernel, in_features, 4))
    assert jnp.array_equal(
        winograd_conv(lhs, rhs, (stride, stride), "SAME"), im2col_conv(lhs, rhs, (stride, stride), "SAME")
    )


@pytest.mark.parametrize("conv", [im2col_conv, winograd_conv])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rhs_dilation": (2, 2)}, "dilation"),
        ({"feature_group_count": 5}, "groups"),
        (
            {"dimension_numbers": jax.lax.conv_dimension_numbers((2, 8, 8, 5), (3, 3, 5, 4), ("NCHW", "HWIO", "NHWC"))},
            "NHWC/HWIO",
        ),
    ],
)
def test_cpu_convolutions_refuse_what_they_do_not_implement(conv, kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv(jnp.zeros((2, 8, 8, 5)), jnp.zeros((3, 3, 5, 4)), (1, 1), "SAME", **kwargs)


def test_max_pool_matches_flax():
    x = jax.random.normal(jax.random.key(3), (2, 8, 6, 3))
    assert jnp.array_equal(max_pool_2x2(x), nnx.max_pool(x, (2, 2), (2, 2)))
