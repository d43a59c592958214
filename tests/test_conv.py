"""The convolution the models compute with (XLA's, under the project's XLA flags) against a float64
reference, values and both gradients, and the 2x2 max-pool against Flax's."""

import jax
import jax.numpy as jnp
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from fer_jax.models.layers import Layers, max_pool_2x2

TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
"""Largest error allowed, relative to the largest reference value: float32 rounds each of the 9 * C
products' partial sums at about 6e-8, bfloat16 rounds its inputs and outputs at about 4e-3."""


def float64_reference(x: jax.Array, kernel: jax.Array, cotangent: jax.Array, stride: int, padding: int):
    """PyTorch's float64 convolution (NCHW/OIHW) and its gradients by autograd, back in NHWC/HWIO."""
    x64 = torch.tensor(jax.device_get(x), dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    w64 = torch.tensor(jax.device_get(kernel), dtype=torch.float64).permute(3, 2, 0, 1).requires_grad_()
    out = F.conv2d(x64, w64, stride=stride, padding=padding)
    g64 = torch.tensor(jax.device_get(cotangent), dtype=torch.float64).permute(0, 3, 1, 2)
    dx, dw = torch.autograd.grad(out, (x64, w64), g64)
    return out.detach().permute(0, 2, 3, 1), dx.permute(0, 2, 3, 1), dw.permute(2, 3, 1, 0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "in_features"),
    [
        (3, 1, "VALID", 1),  # seed_cnn's first layer
        (3, 1, "VALID", 32),  # seed_cnn
        (3, 1, 1, 24),  # vgg_bn, resnet18 (PyTorch's padding=1)
        (3, 2, 1, 16),  # resnet18's downsampling blocks
        (1, 2, 0, 16),  # resnet18's projection shortcuts
    ],
)
def test_model_convolution_matches_a_float64_reference(kernel_size, stride, padding, in_features, dtype):
    conv = Layers(nnx.Rngs(params=0), dtype).conv(
        in_features, 20, kernel_size, padding=padding, stride=stride, use_bias=False
    )
    graph, params = nnx.split(conv)
    x = jax.random.normal(jax.random.key(1), (3, 11, 12, in_features))  # an odd and an even side

    def forward(x, params):
        return nnx.merge(graph, params)(x)

    out, pullback = jax.vjp(forward, x, params)
    cotangent = jax.random.normal(jax.random.key(2), out.shape)
    dx, dparams = pullback(cotangent.astype(out.dtype))
    torch_padding = 0 if padding == "VALID" else padding
    for name, value, reference in zip(
        ("output", "input gradient", "kernel gradient"),
        (out, dx, dparams["kernel"][...]),
        float64_reference(x, params["kernel"][...], cotangent, stride, torch_padding),
    ):
        assert value.shape == tuple(reference.shape), name
        error = jnp.abs(value.astype(jnp.float32) - jnp.asarray(reference.numpy(), jnp.float32)).max()
        assert error <= TOLERANCE[dtype] * float(reference.abs().max()), (name, float(error))


@pytest.mark.parametrize("height, width", [(8, 6), (5, 7)])
def test_max_pool_matches_flax_and_floors_odd_sides_as_pytorch(height: int, width: int):
    x = jax.random.normal(jax.random.key(3), (2, height, width, 3))
    assert jnp.array_equal(max_pool_2x2(x), nnx.max_pool(x, (2, 2), (2, 2)))
    assert max_pool_2x2(x).shape == (2, height // 2, width // 2, 3)
