"""The PyTorch baseline on a device: which one, its precision and input layout, and evaluation on a split (loss,
accuracy, predictions, flip TTA), as `fer_jax.train.evaluation` computes them for JAX."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_jax.data.fer2013 import Split, torch_eval_batches
from fer_jax.environment import cpu_model
from fer_jax.models.layers import resolve_compute_dtype


def torch_device() -> torch.device:
    """CUDA when PyTorch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_device_description(device: torch.device) -> str:
    """'cpu: <model> (<n> cores)' or 'cuda: <GPU name> x<count>', like `environment.device_description`."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"cpu: {cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def precision(compute_dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What `model.compute_dtype` means for PyTorch: `torch.autocast` to bfloat16 where it resolves to
    bfloat16 (weights, optimizer state and BatchNorm statistics stay float32, as in JAX), else nothing."""
    if resolve_compute_dtype(compute_dtype) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device` in channels-last layout, the one oneDNN's CPU convolutions run fastest in."""
    return images.to(device, memory_format=torch.channels_last)


def evaluate_torch(
    model: nn.Module, split: Split, batch_size: int, device: torch.device, compute_dtype: str = "float32"
) -> dict[str, Any]:
    """Mean loss, accuracy and per-image predictions on an unaugmented split, as `evaluation.evaluate_split`."""
    model.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    predictions = []
    with torch.inference_mode(), precision(compute_dtype, device):
        for images, labels, mask in torch_eval_batches(split, batch_size):
            images, labels, mask = to_model_input(images, device), labels.to(device), mask.to(device)
            logits = model(images).float()
            batch_predictions = logits.argmax(-1)
            loss += torch.where(mask, F.cross_entropy(logits, labels, reduction="none"), 0.0).sum()
            correct += ((batch_predictions == labels) & mask).sum()
            count += mask.sum()
            predictions.append(batch_predictions)
    total = int(count)
    return {
        "loss": float(loss) / total,
        "accuracy": int(correct) / total,
        "predictions": torch.cat(predictions)[:total].cpu(),
    }


def flip_tta_accuracy_torch(
    model: nn.Module, split: Split, batch_size: int, device: torch.device, compute_dtype: str = "float32"
) -> float:
    """Accuracy of the softmax averaged over each face and its mirror image, as `evaluation.flip_tta_accuracy`."""
    model.eval()
    correct = 0
    with torch.inference_mode(), precision(compute_dtype, device):
        for images, labels, mask in torch_eval_batches(split, batch_size):
            images, labels, mask = to_model_input(images, device), labels.to(device), mask.to(device)
            probabilities = model(images).float().softmax(-1) + model(images.flip(-1)).float().softmax(-1)
            correct += int(((probabilities.argmax(-1) == labels) & mask).sum())
    return correct / len(split)
