"""Weights ported between the PyTorch and Flax seed CNNs give the same logits and the same accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flax import nnx

from fer_jax.baseline.evaluation import evaluate_torch
from fer_jax.baseline.models import TorchSeedCNN
from fer_jax.baseline.porting import flax_to_torch, load_torch_weights, params_from_torch
from fer_jax.baseline.trainer import train_torch
from fer_jax.config import Config, ModelConfig
from fer_jax.data.fer2013 import as_nhwc, to_jax
from fer_jax.models.seed_cnn import SeedCNN
from fer_jax.models.zoo import create_model
from fer_jax.train.evaluation import evaluate_split, load_splits
from fer_jax.train.steps import init_state


def random_faces(seed: int = 0) -> torch.Tensor:
    return torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def flax_logits(model: SeedCNN, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.from_dlpack(model(as_nhwc(to_jax(images))))


def torch_logits(model: TorchSeedCNN, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(images)


def test_torch_to_flax_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    torch_model = TorchSeedCNN()
    flax_model = create_model(ModelConfig(), seed=1)
    load_torch_weights(flax_model, torch_model.state_dict())
    images = random_faces()
    expected = torch_logits(torch_model, images)
    assert (flax_logits(flax_model, images) - expected).abs().max() < 1e-5
    assert expected.std() > 1e-3  # not a trivially constant output


def test_flax_to_torch_gives_the_same_logits() -> None:
    flax_model = create_model(ModelConfig(), seed=2)
    torch_model = TorchSeedCNN()
    torch_model.load_state_dict(flax_to_torch(flax_model))
    images = random_faces(1)
    expected = flax_logits(flax_model, images)
    assert (torch_logits(torch_model, images) - expected).abs().max() < 1e-5
    assert expected.std() > 1e-3


def test_round_trip_is_exact_and_copies() -> None:
    torch.manual_seed(3)
    original = TorchSeedCNN().state_dict()
    flax_model = SeedCNN(rngs=nnx.Rngs(params=0))
    load_torch_weights(flax_model, original)
    back = flax_to_torch(flax_model)
    assert list(back) == list(original)
    assert all(torch.equal(back[name], original[name]) for name in original)
    back["conv1.bias"].add_(1.0)  # the ported tensors own their memory
    assert torch.equal(flax_to_torch(flax_model)["conv1.bias"], original["conv1.bias"])


def test_params_from_torch_leaves_its_template_alone() -> None:
    state, _ = init_state(Config(), steps_per_epoch=1)
    before = flax_to_torch(state.params)
    params_from_torch(TorchSeedCNN().state_dict(), state.params)
    after = flax_to_torch(state.params)
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.slow
def test_trained_torch_checkpoint_scores_the_same_in_jax(tiny_zip: Path, tmp_path: Path) -> None:
    config = Config()
    config.data.source = str(tiny_zip)
    config.data.cache_dir = str(tmp_path / "cache")
    config.train.epochs = 1
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.run_dir = str(tmp_path / "run")
    results = train_torch(config)

    state_dict = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    torch_model = TorchSeedCNN()
    torch_model.load_state_dict(state_dict)
    state, steps = init_state(config, steps_per_epoch=1)
    state = state.replace(params=params_from_torch(state_dict, state.params))
    test_split = load_splits(config)["PrivateTest"]
    in_torch = evaluate_torch(torch_model, test_split, 16, torch.device("cpu"))
    in_jax = evaluate_split(state.weights, steps.eval, test_split, 16)
    assert in_jax["accuracy"] == in_torch["accuracy"] == results["test_accuracy"]
    assert in_jax["predictions"].tolist() == in_torch["predictions"].tolist()
    assert in_jax["loss"] == pytest.approx(in_torch["loss"], abs=1e-5)
