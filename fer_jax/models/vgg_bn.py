"""VGG with BatchNorm (Khaireddin & Chen, 2021), width-scalable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.layers import (
    IMAGE_SIZE,
    NUM_CLASSES,
    ConvBNReLU,
    Dropout,
    Layers,
    centre_crop,
    max_pool_2x2,
    scaled,
)


class VGGBN(nnx.Module):
    """VGG with BatchNorm: the FER-2013 VGG variant of Khaireddin & Chen (2021).

    Four stages of two 3x3 conv-BN-ReLU blocks (64, 128, 256, 512 channels),
    each stage ending in 2x2 max-pooling (48 -> 24 -> 12 -> 6 -> 3), then
    Flatten(3x3x512) - Dense4096-ReLU-Dropout - Dense4096-ReLU-Dropout - Dense7.
    40,374,599 parameters: 4,686,144 in the convolutions and BatchNorms,
    35,688,455 in the dense head.

    Source: Y. Khaireddin and Z. Chen, "Facial Emotion Recognition: State of the
    Art Performance on FER2013", arXiv:2105.03588 (code: github.com/usef-kh/fer):
    73.28% PrivateTest after 300 epochs of SGD with ten-crop test-time
    augmentation; a deeper, BatchNorm relative of the VGG of Pramerdorfer &
    Kampel (2016). Differences: they feed 40x40 crops (a 2x2x512 flatten, so a
    smaller dense1); here the whole 48x48 face unless `input_crop` is set (40:
    theirs; an odd map side is pooled as PyTorch does, dropping its last row and
    column). Their convolutions carry a bias before BatchNorm; here none
    (BatchNorm cancels it). Kaiming-normal conv weights; dropout 0.2, their
    model's default. `width` multiplies every channel count and the hidden
    width (1: the sizes above).
    """

    STAGE_FEATURES = (64, 128, 256, 512)

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        compute_dtype: str = "float32",
        hidden_features: int = 4096,
        dropout_rate: float = 0.2,
        width: float = 1.0,
        input_crop: int = 0,
    ) -> None:
        layers = Layers(rngs, compute_dtype)
        self.input_crop = input_crop
        hidden_features = scaled(hidden_features, width)
        stages = []
        in_features = 1
        for features in (scaled(f, width) for f in self.STAGE_FEATURES):
            stages.append(nnx.List([ConvBNReLU(layers, in_features, features), ConvBNReLU(layers, features, features)]))
            in_features = features
        self.stages = nnx.List(stages)
        side = (input_crop or IMAGE_SIZE) // 2 ** len(self.STAGE_FEATURES)
        self.dense1 = layers.linear(side * side * in_features, hidden_features)
        self.dense2 = layers.linear(hidden_features, hidden_features)
        self.classifier = layers.linear(hidden_features, NUM_CLASSES)
        self.dropout = Dropout(dropout_rate)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = centre_crop(x, self.input_crop)
        for stage in self.stages:
            for block in stage:
                x = block(x)
            x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(nnx.relu(self.dense1(x)), rngs=rngs)
        x = self.dropout(nnx.relu(self.dense2(x)), rngs=rngs)
        return self.classifier(x).astype(jnp.float32)
