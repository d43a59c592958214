"""The PyTorch baseline: its optimizer matches Optax, and its run folder matches the JAX trainer's."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import optax
import pytest
import torch

from fer_jax.baseline.evaluation import precision, to_model_input
from fer_jax.baseline.models import TorchSeedCNN
from fer_jax.baseline.optim import make_torch_optimizer
from fer_jax.baseline.porting import flax_to_torch
from fer_jax.baseline.trainer import torch_train_step, train_torch
from fer_jax.config import Config
from fer_jax.data.fer2013 import as_nhwc, to_jax
from fer_jax.files import read_jsonl
from fer_jax.models.zoo import create_model
from fer_jax.train.optim import make_optimizer
from fer_jax.train.steps import training_loss
from fer_jax.train.trainer import TrainingError

METRIC_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}
RUN_FILES = [
    "config.json",
    "environment.json",
    "metrics.jsonl",
    "curves.png",
    "confusion_matrix.png",
    "results.json",
    "checkpoints/best.pt",
    "checkpoints/latest.pt",
]


def tiny_config(tiny_zip: Path, tmp_path: Path, run: str, epochs: int = 2) -> Config:
    config = Config()
    config.data.source = str(tiny_zip)
    config.data.cache_dir = str(tmp_path / "cache")
    config.train.epochs = epochs
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.run_dir = str(tmp_path / run)
    return config


@pytest.mark.parametrize(
    "overrides",
    [
        ["optim.name=adam"],
        ["optim.name=adam", "optim.weight_decay=0.01", "optim.schedule=constant"],
        ["optim.name=sgd", "optim.weight_decay=0.001"],
        ["optim.name=sgd", "optim.nesterov=false", "optim.learning_rate=0.1"],
    ],
)
def test_torch_optimizer_follows_optax(overrides: list[str]) -> None:
    config = Config().apply_overrides(["train.epochs=2", *overrides])
    steps_per_epoch = 3
    start = torch.linspace(-1.0, 1.0, 10)
    target = torch.linspace(0.5, -0.5, 10)

    weights = torch.nn.Parameter(start.clone())
    optimizer, schedule = make_torch_optimizer(config, [weights], steps_per_epoch)
    tx, optax_schedule = make_optimizer(config, steps_per_epoch)
    params = to_jax(start.clone())
    opt_state = tx.init(params)
    for step in range(config.train.epochs * steps_per_epoch):
        assert schedule(step) == pytest.approx(float(optax_schedule(step)), rel=1e-6, abs=1e-9)
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        weights.grad = weights.detach() - target
        optimizer.step()
        updates, opt_state = tx.update(params - to_jax(target), opt_state, params)
        params = optax.apply_updates(params, updates)
    assert float(jnp.abs(params - to_jax(weights.detach().clone())).max()) < 1e-6


@pytest.mark.slow
def test_train_torch_writes_the_run_folder(tiny_zip: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_zip, tmp_path, "run")
    results = train_torch(config)
    run_dir = Path(config.run_dir)
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(set(row) == METRIC_KEYS for row in rows)
    assert json.loads((run_dir / "results.json").read_text()) == results
    assert results["framework"] == "pytorch"
    assert results["epochs"] == 2 and results["stop_reason"] == "max_epochs"
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["parameters"] == sum(p.numel() for p in TorchSeedCNN().parameters())
    TorchSeedCNN().load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True))
    with pytest.raises(TrainingError, match="already holds a run"):
        train_torch(config)


@pytest.mark.slow
def test_resumed_run_repeats_an_uninterrupted_one(tiny_zip: Path, tmp_path: Path) -> None:
    straight = tiny_config(tiny_zip, tmp_path, "straight")
    straight.optim.schedule = "constant"  # the cosine schedule depends on train.epochs
    train_torch(straight)

    interrupted = tiny_config(tiny_zip, tmp_path, "interrupted", epochs=1)
    interrupted.optim.schedule = "constant"
    train_torch(interrupted)
    interrupted.train.epochs = 2
    train_torch(interrupted, resume=True)

    def without_seconds(run_dir: str) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_jsonl(Path(run_dir) / "metrics.jsonl")]

    assert without_seconds(interrupted.run_dir) == without_seconds(straight.run_dir)


def test_train_torch_can_start_from_the_jax_models_initial_weights(tiny_zip: Path, tmp_path: Path) -> None:
    from fer_jax.baseline.porting import flax_to_torch
    from fer_jax.models.zoo import create_model

    config = tiny_config(tiny_zip, tmp_path, "run")
    config.apply_overrides(["train.epochs=1", "optim.learning_rate=0", "optim.schedule=constant"])
    initial = flax_to_torch(create_model(config.model, config.train.seed))
    train_torch(config, initial_weights=initial)
    best = torch.load(Path(config.run_dir) / "checkpoints" / "best.pt", weights_only=True)
    assert set(best) == set(initial) and all(torch.equal(best[k].cpu(), initial[k]) for k in initial)
    assert not torch.equal(TorchSeedCNN().state_dict()["conv2.weight"], initial["conv2.weight"])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_torch_train_step_has_the_jax_loss_with_label_smoothing(label_smoothing: float) -> None:
    config = Config()
    flax_model = create_model(config.model, seed=3)
    torch_model = TorchSeedCNN()
    torch_model.load_state_dict(flax_to_torch(flax_model))
    torch_model.eval()  # no dropout, so both see the same logits
    flax_model.eval()
    images = torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 7
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.0)
    loss, _ = torch_train_step(torch_model, optimizer, images, labels, 0.0, 0, label_smoothing)
    logits = flax_model(as_nhwc(to_jax(images)))
    expected = training_loss(logits, to_jax(labels), label_smoothing)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_torch_bfloat16_step_computes_in_bfloat16_and_keeps_float32_weights_and_loss() -> None:
    images = torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    images = to_model_input(images, torch.device("cpu"))
    labels = torch.arange(8) % 7
    losses = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = TorchSeedCNN().to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with precision(dtype, images.device):
            assert model.conv2(model.conv1(images)).dtype == getattr(torch, dtype)
        loss, _ = torch_train_step(model, optimizer, images, labels, 0.1, 0, compute_dtype=dtype)
        assert loss.dtype == torch.float32
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert {s.dtype for group in optimizer.state.values() for s in group.values()} <= {torch.float32}
        losses[dtype] = float(loss)
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
    assert losses["bfloat16"] != losses["float32"]
