"""PyTorch baseline: the seed CNN in plain PyTorch, trained with the JAX trainer's recipe.

`train_torch(config)` mirrors `fer_jax.train.trainer.train`: the same batches
(`torch_train_batches`, `torch_eval_batches`), splits, optimizer, schedule,
batch size and early stopping on PublicTest, and the same run folder:
config.json, environment.json, metrics.jsonl (same row keys), curves.png,
confusion_matrix.png, results.json (same keys, plus "framework": "pytorch"),
with checkpoints/best.pt (the model's state dict), checkpoints/latest.pt and
latest.previous.pt (model, optimizer and record, to resume) and their checksum
manifest, crash-safe like the Orbax ones (`fer_jax.baseline.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fer_jax.baseline.checkpoints import TorchCheckpoints
from fer_jax.baseline.evaluation import (
    evaluate_torch,
    flip_tta_accuracy_torch,
    precision,
    to_model_input,
    torch_device,
    torch_device_description,
)
from fer_jax.baseline.models import TorchSeedCNN, count_torch_params
from fer_jax.baseline.optim import make_torch_optimizer
from fer_jax.config import Config, ConfigError
from fer_jax.data.check import check_for_run
from fer_jax.data.fer2013 import Split, torch_train_batches
from fer_jax.train import loop
from fer_jax.train.checkpoint_policy import holds_checkpoints
from fer_jax.train.evaluation import confusion_matrix, load_dataset, load_splits
from fer_jax.train.loop import TrainingError
from fer_jax.train.tensorboard_log import StepTrace


def train_torch(
    config: Config, resume: bool = False, initial_weights: Mapping[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """Train (or with `resume`, continue) the PyTorch baseline in `config.run_dir`; return its results.

    `initial_weights`: a `TorchSeedCNN` state dict to start from instead of PyTorch's own initialisation
    (e.g. the JAX model's, by `fer_jax.baseline.porting.flax_to_torch`, for a comparison from the same weights).
    """
    config.validate()
    if config.model.name != "seed_cnn":
        raise ConfigError(f"the PyTorch baseline has only model 'seed_cnn', not {config.model.name!r}")
    if config.train.ema_decay or config.data.mixup:
        raise ConfigError("the PyTorch baseline does not mirror train.ema_decay or data.mixup; set them to 0")
    run_dir = Path(config.run_dir)
    trace = StepTrace(run_dir, config.train.profile_steps, "pytorch")
    loop.check_new_run(run_dir, holds_checkpoints(run_dir), resume)
    dataset = load_dataset(config)
    check_for_run(dataset, run_dir, config.data.cache_dir)
    splits = load_splits(config, dataset)
    steps_per_epoch = loop.steps_per_epoch(config, splits["Training"])

    device = torch_device()
    torch.manual_seed(config.train.seed)
    model = TorchSeedCNN().to(device, memory_format=torch.channels_last)
    if initial_weights is not None:
        model.load_state_dict(initial_weights)
    optimizer, schedule = make_torch_optimizer(config, model.parameters(), steps_per_epoch)
    dtype = config.model.compute_dtype
    checkpoints = TorchCheckpoints(run_dir)
    record = loop.new_record()
    latest = checkpoints.resume(device, loop.finished_epochs(run_dir)) if resume else None
    if latest:
        model.load_state_dict(latest["model"])
        optimizer.load_state_dict(latest["optimizer"])
        record = latest["record"]
        print(f"Resuming {run_dir} after epoch {record['epoch']}")
    board = loop.start_run(config, record, "pytorch", steps_per_epoch * config.train.batch_size)
    print(
        f"Run folder {run_dir} | PyTorch {config.model.name}: {count_torch_params(model):,} parameters | "
        f"train {len(splits['Training'])}, val {len(splits['PublicTest'])}, test {len(splits['PrivateTest'])} "
        f"images | {device}"
    )

    def save(which: str, epoch: int, record: dict[str, Any]) -> None:
        if which == "best":
            checkpoints.save("best", epoch, model.state_dict())
        else:
            checkpoints.save(
                "latest", epoch, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "record": record}
            )

    hooks = loop.EpochHooks(
        train_epoch=lambda epoch: torch_train_epoch(
            model, optimizer, schedule, (epoch - 1) * steps_per_epoch, splits["Training"], config, epoch, device, trace
        ),
        validate=lambda: evaluate_torch(model, splits["PublicTest"], config.train.eval_batch_size, device, dtype),
        learning_rate=lambda epoch: schedule(epoch * steps_per_epoch),
        save=save,
    )
    try:
        record, stop_reason = loop.run_epochs(config, record, hooks, board)
    except BaseException:
        board.close()
        raise
    finally:
        trace.close()
    if not record["best_epoch"]:
        raise TrainingError(f"{run_dir}: no epoch finished with a finite loss, so there is no checkpoint to evaluate")
    model.load_state_dict(checkpoints.restore_best(record["best_epoch"], device))
    results = evaluate_best(config, model, splits, record["best_epoch"], device)
    return loop.finish_run(config, results, stop_reason, "pytorch", board=board)


def evaluate_best(
    config: Config, model: nn.Module, splits: dict[str, Split], best_epoch: int, device: torch.device
) -> dict[str, Any]:
    """The results of the selected weights (loaded in `model`) on PublicTest and PrivateTest, with and without
    flip TTA, as `loop.summarize` reports them."""
    batch, dtype = config.train.eval_batch_size, config.model.compute_dtype
    val = evaluate_torch(model, splits["PublicTest"], batch, device, dtype)
    test = evaluate_torch(model, splits["PrivateTest"], batch, device, dtype)
    tta = {
        name: flip_tta_accuracy_torch(model, splits[split], batch, device, dtype)
        for name, split in (("val", "PublicTest"), ("test", "PrivateTest"))
    }
    matrix = confusion_matrix(splits["PrivateTest"].labels.tolist(), test["predictions"].tolist()).tolist()
    return loop.summarize(
        config,
        best_epoch,
        val,
        test,
        splits,
        count_torch_params(model),
        torch_device_description(device),
        matrix,
        tta,
    )


def dropout_seed(seed: int, step: int) -> int:
    """The torch seed of the dropout masks at `step`: one per step, like `jax.random.fold_in(key, step)`."""
    return seed * 1_000_003 + step + 1


def torch_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    learning_rate: float,
    seed: int,
    label_smoothing: float = 0.0,
    compute_dtype: str = "float32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns its mean loss and number of correct predictions (on the device).

    The loss is cross-entropy against (1 - label_smoothing) one-hot + label_smoothing / 7 targets,
    as `fer_jax.train.steps.training_loss`. The forward pass runs in `compute_dtype` (`precision`); the
    logits and the loss are float32.

    Dropout gets its own seed per step and leaves the global RNG as it was, so the
    data loader's augmentation stream (the same as the JAX trainer's) is not shifted.
    """
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    with torch.random.fork_rng(devices=[]), precision(compute_dtype, images.device):
        torch.manual_seed(seed)
        logits = model(images).float()
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(-1) == labels).sum()


def torch_train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Callable[[int], float],
    step: int,
    split: Split,
    config: Config,
    epoch: int,
    device: torch.device,
    trace: StepTrace | None = None,
) -> dict[str, float]:
    """One epoch from global step `step`; the mean loss and accuracy on the augmented batches.

    `trace` is told of every step (the profiler's window)."""
    model.train()
    batches = torch_train_batches(split, config.data, config.train.batch_size, config.train.seed, epoch)
    total = len(split) // config.train.batch_size
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with tqdm(
        batches,
        total=total,
        desc=f"Epoch {epoch}/{config.train.epochs}",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    ) as bar:
        for index, (images, labels) in enumerate(bar):
            images, labels = to_model_input(images, device), labels.to(device)
            loss, batch_correct = torch_train_step(
                model,
                optimizer,
                images,
                labels,
                schedule(step),
                dropout_seed(config.train.seed, step),
                config.optim.label_smoothing,
                config.model.compute_dtype,
            )
            step += 1
            if trace:
                trace.step()
            loss_sum += loss * len(labels)
            correct += batch_correct
            count += len(labels)
            if index % 20 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / count:.3f}", acc=f"{int(correct) / count:.3f}")
    return {"loss": float(loss_sum) / count, "accuracy": int(correct) / count}
