"""Seed-CNN weights between PyTorch (`TorchSeedCNN` state dicts) and Flax NNX (`SeedCNN`), both ways.

The layer names are the same on both sides (conv1..conv4, dense1, dense2);
the layouts differ:
- conv kernels: PyTorch OIHW, Flax HWIO (`transpose(2, 3, 1, 0)`);
- dense kernels: PyTorch (out, in), Flax (in, out);
- dense1 reads the flattened 4x4x128 maps, which PyTorch flattens in (C, H, W)
  order and Flax in (H, W, C) order, so its input rows are permuted as well.

Arrays cross between the frameworks by DLPack (no NumPy), and every result
owns its memory: a ported tensor never aliases the weights it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import torch
from flax import nnx

from fer_jax.baseline.models import TorchVGGBN
from fer_jax.data.fer2013 import to_jax
from fer_jax.models.vgg_bn import VGGBN

LAYERS = ("conv1", "conv2", "conv3", "conv4", "dense1", "dense2")
FLATTENED_MAPS = (4, 4, 128)
"""(H, W, C) of the feature maps that dense1 reads."""

PureParams = dict[str, dict[str, jax.Array]]


def torch_to_flax(state_dict: Mapping[str, torch.Tensor]) -> PureParams:
    """A `TorchSeedCNN` state dict as `{layer: {'kernel', 'bias'}}`, the layout of `nnx.to_pure_dict(state)`."""
    h, w, c = FLATTENED_MAPS
    params: PureParams = {}
    for name in LAYERS:
        weight = state_dict[f"{name}.weight"]
        if name.startswith("conv"):
            kernel = weight.permute(2, 3, 1, 0)  # OIHW -> HWIO
        elif name == "dense1":
            kernel = weight.reshape(-1, c, h, w).permute(2, 3, 1, 0).reshape(h * w * c, -1)  # rows (C,H,W) -> (H,W,C)
        else:
            kernel = weight.T
        params[name] = {"kernel": _to_jax(kernel), "bias": _to_jax(state_dict[f"{name}.bias"])}
    return params


def params_from_torch(state_dict: Mapping[str, torch.Tensor], like: nnx.State) -> nnx.State:
    """A new params `nnx.State` shaped like `like` (e.g. `TrainState.params`) holding the torch weights."""
    params = jax.tree.map(lambda leaf: leaf, like)
    nnx.replace_by_pure_dict(params, torch_to_flax(state_dict))
    return params


def load_torch_weights(model: nnx.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Overwrite the weights of an NNX `SeedCNN` in place with those of a `TorchSeedCNN` state dict."""
    nnx.update(model, params_from_torch(state_dict, nnx.state(model, nnx.Param)))


def flax_to_torch(weights: nnx.Module | nnx.State) -> dict[str, torch.Tensor]:
    """A `TorchSeedCNN` state dict (CPU tensors) from an NNX `SeedCNN` or its params State."""
    params = nnx.state(weights, nnx.Param) if isinstance(weights, nnx.Module) else weights
    pure = nnx.to_pure_dict(params)
    h, w, c = FLATTENED_MAPS
    state_dict: dict[str, torch.Tensor] = {}
    for name in LAYERS:
        kernel = _to_torch(pure[name]["kernel"])
        if name.startswith("conv"):
            weight = kernel.permute(3, 2, 0, 1)  # HWIO -> OIHW
        elif name == "dense1":
            weight = kernel.reshape(h, w, c, -1).permute(3, 2, 0, 1).reshape(-1, h * w * c)  # rows (H,W,C) -> (C,H,W)
        else:
            weight = kernel.T
        state_dict[f"{name}.weight"] = weight.contiguous()
        state_dict[f"{name}.bias"] = _to_torch(pure[name]["bias"])
    return state_dict


def vgg_bn_to_torch(model: VGGBN) -> torch.nn.Module:
    """An NNX `VGGBN` (any width) as a `TorchVGGBN` in eval mode with the same weights and BatchNorm statistics.

    One way only (for ONNX export): the PyTorch baseline does not train this net.
    """
    features = [stage[0].conv.out_features for stage in model.stages]
    net = TorchVGGBN(features, model.dense1.out_features, model.dropout.rate, model.input_crop)
    side = math.isqrt(model.dense1.in_features // features[-1])  # of the last feature map, which dense1 flattens
    state_dict: dict[str, torch.Tensor] = {}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            prefix = f"stages.{i}.{j}"
            state_dict[f"{prefix}.conv.weight"] = _to_torch(block.conv.kernel[...]).permute(3, 2, 0, 1).contiguous()
            norm = block.norm
            for torch_name, value in (
                ("weight", norm.scale),
                ("bias", norm.bias),
                ("running_mean", norm.mean),
                ("running_var", norm.var),
            ):
                state_dict[f"{prefix}.norm.{torch_name}"] = _to_torch(value[...])
            state_dict[f"{prefix}.norm.num_batches_tracked"] = torch.tensor(0)
    for name in ("dense1", "dense2", "classifier"):
        kernel = _to_torch(getattr(model, name).kernel[...])
        if name == "dense1":  # rows (H, W, C) -> (C, H, W), PyTorch's flatten order
            kernel = kernel.reshape(side, side, features[-1], -1).permute(2, 0, 1, 3).reshape(kernel.shape)
        state_dict[f"{name}.weight"] = kernel.T.contiguous()
        state_dict[f"{name}.bias"] = _to_torch(getattr(model, name).bias[...])
    net.load_state_dict(state_dict)
    return net.eval()


def _to_jax(tensor: torch.Tensor) -> jax.Array:
    return to_jax(tensor.detach().cpu().clone(memory_format=torch.contiguous_format))


def _to_torch(array: jax.Array) -> torch.Tensor:
    return torch.from_dlpack(jax.device_put(array, jax.devices("cpu")[0])).clone()
