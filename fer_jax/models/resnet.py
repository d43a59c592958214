"""ResNet-18 for 48x48 faces: a 3x3 stem and no stem pooling, width-scalable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.layers import NUM_CLASSES, ConvBNReLU, Dropout, Layers, centre_crop, scaled


class BasicBlock(nnx.Module):
    """ResNet basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (PyTorch's padding).

    The shortcut is the identity, or a strided 1x1 conv-BN where the shape
    changes. The last BatchNorm's scale starts at zero (Goyal et al. 2017), so
    each block starts as its shortcut: deep nets then train like shallow ones
    early on.
    """

    def __init__(self, layers: Layers, in_features: int, out_features: int, stride: int) -> None:
        self.conv1 = layers.conv_before_norm(in_features, out_features, stride=stride)
        self.norm1 = layers.batch_norm(out_features)
        self.conv2 = layers.conv_before_norm(out_features, out_features)
        self.norm2 = layers.batch_norm(out_features, scale_init=nnx.initializers.zeros)
        if stride != 1 or in_features != out_features:
            self.shortcut_conv = layers.conv_before_norm(in_features, out_features, 1, stride=stride)
            self.shortcut_norm = layers.batch_norm(out_features)
        else:
            self.shortcut_conv = self.shortcut_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = nnx.relu(self.norm1(self.conv1(x)))
        residual = self.norm2(self.conv2(residual))
        shortcut = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        return nnx.relu(residual + shortcut)


class ResNet18(nnx.Module):
    """ResNet-18 for 48x48 faces: 3x3 stem, no stem pooling, global average pooling.

    Stem: 3x3 conv64-BN-ReLU at full resolution (ImageNet's 7x7/2 conv and
    max-pool would shrink 48x48 to 12x12 before the first block). Then four
    stages of two basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2:
    48 -> 48 -> 24 -> 12 -> 6), global average pooling, Dropout, Dense7.
    11,171,271 parameters.

    Source: K. He et al., "Deep Residual Learning for Image Recognition" (CVPR
    2016), with the 3x3 stem commonly used for small images (as in CIFAR
    ResNet-18s). Kaiming-normal conv weights as torchvision's; the last
    BatchNorm scale of each block starts at zero (torchvision's
    `zero_init_residual`); dropout 0.2 before the classifier. `width`
    multiplies every channel count (1: the sizes above; 0.25: 16-128 channels).
    `input_crop` (0: none) feeds it the central square of that side.
    """

    STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
    BLOCKS_PER_STAGE = 2

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        compute_dtype: str = "float32",
        dropout_rate: float = 0.2,
        width: float = 1.0,
        input_crop: int = 0,
    ) -> None:
        layers = Layers(rngs, compute_dtype)
        self.input_crop = input_crop
        stages = [(scaled(features, width), stride) for features, stride in self.STAGES]
        self.stem = ConvBNReLU(layers, 1, stages[0][0])
        blocks = []
        in_features = stages[0][0]
        for features, stride in stages:
            for index in range(self.BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(layers, in_features, features, stride if index == 0 else 1))
                in_features = features
        self.blocks = nnx.List(blocks)
        self.dropout = Dropout(dropout_rate)
        self.classifier = layers.linear(in_features, NUM_CLASSES)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.stem(centre_crop(x, self.input_crop))
        for block in self.blocks:
            x = block(x)
        x = self.dropout(x.mean(axis=(1, 2)), rngs=rngs)
        return self.classifier(x).astype(jnp.float32)
