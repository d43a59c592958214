"""The PyTorch baseline's models: `fer_jax.models.seed_cnn.SeedCNN` and `fer_jax.models.vgg_bn.VGGBN` as
`torch.nn.Module`s, same layers and names (`fer_jax.baseline.porting` converts weights both ways)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fer_jax.models.layers import IMAGE_SIZE, NUM_CLASSES


class TorchSeedCNN(nn.Module):
    """`fer_jax.models.seed_cnn.SeedCNN` in PyTorch: same layers, names and shapes, NCHW input (N, 1, 48, 48).

    Initialisation differs: PyTorch's default is kaiming-uniform weights
    (a=sqrt(5)) and uniform biases in +-1/sqrt(fan_in); Flax uses lecun-normal
    kernels and zero biases. So the two start from different weights for the
    same seed; the rest of the recipe is identical. `fer_jax.baseline.porting` converts
    weights both ways.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.conv4 = nn.Conv2d(128, 128, 3)
        self.dropout2 = nn.Dropout(0.25)
        self.dense1 = nn.Linear(4 * 4 * 128, 1024)
        self.dropout3 = nn.Dropout(0.5)
        self.dense2 = nn.Linear(1024, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(self.pool(x))
        x = self.pool(F.relu(self.conv3(x)))
        x = self.pool(F.relu(self.conv4(x)))
        x = self.dropout2(x)
        x = torch.flatten(x, 1)
        x = self.dropout3(F.relu(self.dense1(x)))
        return self.dense2(x)


class TorchVGGBN(nn.Module):
    """`fer_jax.models.vgg_bn.VGGBN` in PyTorch, for ONNX export and parity checks (the baseline trains only the seed
    CNN): the same stages of conv3x3 (padding 1, no bias)-BatchNorm-ReLU pairs and 2x2 max-pooling, then
    Dense-ReLU-Dropout twice and the classifier. NCHW input (N, 1, 48, 48), of which it reads the central
    `input_crop` square (0: all). `fer_jax.baseline.porting.vgg_bn_to_torch` fills it from an NNX model of any width.
    """

    def __init__(
        self, stage_features: Sequence[int], hidden_features: int, dropout_rate: float, input_crop: int = 0
    ) -> None:
        super().__init__()
        self.input_crop = input_crop
        stages, in_features = [], 1
        for features in stage_features:
            stages.append(nn.ModuleList([_ConvBNReLU(in_features, features), _ConvBNReLU(features, features)]))
            in_features = features
        self.stages = nn.ModuleList(stages)
        side = (input_crop or IMAGE_SIZE) // 2 ** len(stage_features)
        self.dense1 = nn.Linear(side * side * in_features, hidden_features)
        self.dense2 = nn.Linear(hidden_features, hidden_features)
        self.classifier = nn.Linear(hidden_features, NUM_CLASSES)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_crop:  # the same pixels as `fer_jax.models.layers.centre_crop`
            top, left = (x.shape[2] - self.input_crop) // 2, (x.shape[3] - self.input_crop) // 2
            x = x[:, :, top : top + self.input_crop, left : left + self.input_crop]
        for stage in self.stages:
            for block in stage:
                x = block(x)
            x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.dense1(x)))
        x = self.dropout(F.relu(self.dense2(x)))
        return self.classifier(x)


class _ConvBNReLU(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_features, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def count_torch_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
