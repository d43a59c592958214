"""PyTorch baseline: the seed CNN in plain PyTorch, trained with the JAX trainer's recipe.

`train_torch(config)` mirrors `fer_jax.train.trainer.train`: the same batches
(`torch_train_batches`, `torch_eval_batches`), splits, optimizer, schedule,
batch size and early stopping on PublicTest, and the same run folder:
config.json, environment.json, metrics.jsonl (same row keys), curves.png,
confusion_matrix.png, results.json (same keys, plus "framework": "pytorch"),
with checkpoints/best.pt (the model's state dict), checkpoints/latest.pt and
latest.previous.pt (model, optimizer and record, to resume) and their checksum
manifest, crash-safe like the Orbax ones (`TorchCheckpoints`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fer_jax.config import Config, ConfigError
from fer_jax.data.check import check_for_run
from fer_jax.data.fer2013 import Split, torch_eval_batches, torch_train_batches
from fer_jax.environment import cpu_model
from fer_jax.files import write_atomic, write_json
from fer_jax.models.layers import IMAGE_SIZE, NUM_CLASSES, resolve_compute_dtype
from fer_jax.train import loop
from fer_jax.train.checkpoints import (
    MANIFEST,
    CheckpointError,
    file_digest,
    first_line,
    holds_checkpoints,
    move_aside,
    set_aside_stamp,
    warn,
)
from fer_jax.train.evaluation import confusion_matrix, load_dataset, load_splits
from fer_jax.train.loop import TrainingError
from fer_jax.train.optim import warmup_steps
from fer_jax.train.tensorboard_log import StepTrace


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


def torch_device() -> torch.device:
    """CUDA when PyTorch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_device_description(device: torch.device) -> str:
    """'cpu: <model> (<n> cores)' or 'cuda: <GPU name> x<count>', like `environment.device_description`."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"cpu: {cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each step, as `fer_jax.train.optim.make_schedule` gives it (linear warmup, then constant,
    cosine or linear)."""
    opt = config.optim
    warmup = warmup_steps(config, steps_per_epoch)
    if opt.schedule not in ("constant", "cosine", "linear"):
        raise ConfigError(f"unknown optim.schedule {opt.schedule!r}: expected 'constant', 'cosine' or 'linear'")
    decay_steps = max(1, config.train.epochs * steps_per_epoch - warmup)

    def rate(step: int) -> float:
        if step < warmup:
            return opt.learning_rate * step / warmup
        if opt.schedule == "constant":
            return opt.learning_rate
        progress = min(step - warmup, decay_steps) / decay_steps
        if opt.schedule == "linear":
            return opt.learning_rate * (1 - progress)
        return opt.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    return rate


def make_torch_optimizer(
    config: Config, parameters: Iterable[nn.Parameter], steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """The optimizer of `fer_jax.train.optim.make_optimizer` in PyTorch, and its schedule (set it before each step).

    Adam is AdamW with decoupled weight decay (plain Adam at weight_decay 0),
    as `optax.adamw`; SGD adds the weight decay to the gradient before
    momentum, as `optax.add_decayed_weights` before `optax.sgd`. As there,
    only kernels (ndim >= 2) are decayed, not biases (`fer_jax.train.steps.decays`).
    """
    opt = config.optim
    schedule = learning_rate_schedule(config, steps_per_epoch)
    parameters = list(parameters)
    groups = [{"params": parameters}]
    if opt.weight_decay:
        groups = [
            {"params": [p for p in parameters if p.ndim >= 2]},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ]
    if opt.name == "adam":
        optimizer = torch.optim.AdamW(groups, lr=schedule(0), weight_decay=opt.weight_decay)
    elif opt.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=schedule(0),
            momentum=opt.momentum,
            nesterov=opt.nesterov and opt.momentum > 0,
            weight_decay=opt.weight_decay,
        )
    else:
        raise ConfigError(f"unknown optim.name {opt.name!r}: expected 'adam' or 'sgd'")
    return optimizer, schedule


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
    val = evaluate_torch(model, splits["PublicTest"], config.train.eval_batch_size, device, dtype)
    test = evaluate_torch(model, splits["PrivateTest"], config.train.eval_batch_size, device, dtype)
    tta = {
        name: flip_tta_accuracy_torch(model, splits[split], config.train.eval_batch_size, device, dtype)
        for name, split in (("val", "PublicTest"), ("test", "PrivateTest"))
    }
    matrix = confusion_matrix(splits["PrivateTest"].labels.tolist(), test["predictions"].tolist()).tolist()
    results = loop.summarize(
        config,
        record["best_epoch"],
        val,
        test,
        splits,
        count_torch_params(model),
        torch_device_description(device),
        matrix,
        tta,
    )
    return loop.finish_run(config, results, stop_reason, "pytorch", board=board)


@dataclass(frozen=True)
class TorchFile:
    """One checkpoint file of the baseline and what its manifest entry says about it."""

    kind: str
    """'latest' or 'best'."""
    path: Path
    epoch: int | None
    """From the manifest entry its checksum matches; None without one."""
    problem: str = ""
    """Why it cannot be trusted (no entry matches it); '' when verified, or unverified in a run without a manifest."""


class TorchCheckpoints:
    """The baseline's checkpoints, crash-safe as `fer_jax.train.checkpoints.RunCheckpoints` (same order, same rules).

    `checkpoints/best.pt` (the model's state dict), `latest.pt` and `latest.previous.pt` (model,
    optimizer and record) and `checksums.json`: the kind, epoch, size and sha256 of each file saved.
    A save writes `<kind>.next.pt` (temporary file, fsync, rename), adds its entry to the manifest
    (the commit point), then renames latest.pt to latest.previous.pt and the new file into place.
    Files are recognised by their checksum, whatever their name, so a kill between two renames
    leaves each file with its epoch; a file no entry matches is damaged or a save cut short. A run
    saved before manifests (none here) restores unverified, with a warning.
    """

    NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "latest": ("latest.pt", "latest.previous.pt", "latest.next.pt"),
        "best": ("best.pt", "best.next.pt"),
    }
    """Where each kind of checkpoint may be, newest name first."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.root = run_dir / "checkpoints"

    def save(self, which: str, epoch: int, obj: Any) -> None:
        """Save `obj` as epoch `epoch` of `which` ('latest' or 'best'); keeps 2 latest and 1 best."""
        new = self.root / f"{which}.next.pt"
        save_torch(new, obj)
        entries = [e for e in self._entries() or [] if (e["kind"], e["epoch"]) != (which, epoch)]
        entries.append({"kind": which, "epoch": epoch, **file_digest(new)})
        write_json(self.root / MANIFEST, {"files": entries})
        if which == "latest" and (self.root / "latest.pt").is_file():
            os.replace(self.root / "latest.pt", self.root / "latest.previous.pt")
        os.replace(new, self.root / f"{which}.pt")
        keep = 2 if which == "latest" else 1
        kept = sorted((e["epoch"] for e in entries if e["kind"] == which), reverse=True)[:keep]
        write_json(self.root / MANIFEST, {"files": [e for e in entries if e["kind"] != which or e["epoch"] in kept]})

    def resume(self, device: torch.device, finished_epochs: int) -> dict[str, Any] | None:
        """The newest readable latest checkpoint ({'model', 'optimizer', 'record'}), or None to start over.

        Sets aside files a continued run would trip over (damaged, cut short, or newer than the epoch
        it continues from). None only when no latest file is readable or trusted and metrics.jsonl
        records no epoch; `CheckpointError` when epochs finished but no latest checkpoint is readable.
        """
        files = self._files()
        failed = [f for f in files if f.problem]
        trusted = sorted(
            (f for f in files if f.kind == "latest" and not f.problem),
            key=lambda f: -1 if f.epoch is None else -f.epoch,
        )
        chosen, loaded = None, None
        for file in trusted:
            try:
                loaded = torch.load(file.path, map_location=device, weights_only=True)
            except Exception as err:  # any unpickling failure means this file is unusable
                failed.append(TorchFile(file.kind, file.path, file.epoch, f"is unreadable ({first_line(err)})"))
                continue
            chosen = file
            break
        if chosen is None and (finished_epochs or trusted):
            finished = f"; metrics.jsonl records {finished_epochs} finished epochs" if finished_epochs else ""
            problems = "; ".join(self._why(f) for f in failed) or f"{self.root} holds none"
            raise CheckpointError(
                f"{self.run_dir}: no readable latest checkpoint ({problems}{finished}); "
                "train it again in a new --run-dir, or put back its checkpoints from a copy"
            )
        epoch = loaded["record"]["epoch"] if loaded else 0
        for file in failed:
            if chosen and file.kind == "latest":
                warn(f"{self._why(file)}; using {self._name(chosen.path)}")
        stamp = set_aside_stamp()
        for file in files:
            unusable = any(f.path == file.path for f in failed)
            if file != chosen and (unusable or (file.epoch or 0) > epoch):
                reason = "damaged or cut short" if unusable else f"newer than epoch {epoch}, which the run saves again"
                move_aside(file.path, self.run_dir, reason, stamp)
        if chosen is None:
            print(f"{self.run_dir}: no epoch had finished and been saved; starting it from the beginning")
        return loaded

    def restore_best(self, best_epoch: int, device: torch.device) -> dict[str, Any]:
        """The model state dict of epoch `best_epoch`: best.pt, or a latest checkpoint of that epoch when best.pt
        is damaged; `CheckpointError` when neither is readable."""
        files = self._files()
        failed = [f for f in files if f.kind == "best" and f.problem]
        candidates = [
            f for f in files if not f.problem and (f.epoch == best_epoch or (f.kind, f.epoch) == ("best", None))
        ]
        candidates.sort(key=lambda f: f.kind != "best")
        for file in candidates:
            try:
                obj = torch.load(file.path, map_location=device, weights_only=True)
            except Exception as err:  # any unpickling failure means this file is unusable
                failed.append(TorchFile(file.kind, file.path, file.epoch, f"is unreadable ({first_line(err)})"))
                continue
            for bad in failed:
                warn(f"{self._why(bad)}; using {self._name(file.path)}")
            return obj["model"] if file.kind == "latest" else obj
        problems = "; ".join(self._why(f) for f in failed) or "best.pt is missing"
        raise CheckpointError(
            f"{self.run_dir}: no readable best checkpoint of epoch {best_epoch} ({problems}); its "
            "selected weights are lost: train the run again, or put back its checkpoints from a copy"
        )

    def _name(self, path: Path) -> str:
        return str(self.run_dir / "checkpoints" / path.name)

    def _why(self, file: TorchFile) -> str:
        return f"{self._name(file.path)} {file.problem}"

    def _entries(self) -> list[dict[str, Any]] | None:
        """The manifest's entries; None when there is none (a run saved before manifests)."""
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            return list(json.loads(path.read_text())["files"])
        except (ValueError, KeyError, TypeError):
            return []

    def _files(self) -> list[TorchFile]:
        """The checkpoint files here, each with the epoch of the manifest entry its checksum matches."""
        entries = self._entries()
        files = []
        for kind, names in self.NAMES.items():
            for path in (self.root / name for name in names if (self.root / name).is_file()):
                if entries is None:
                    warn(
                        f"{self._name(path)}: no {MANIFEST} (saved before checkpoints had checksums); "
                        "using it unverified"
                    )
                    files.append(TorchFile(kind, path, None))
                    continue
                digest = file_digest(path)
                epochs = [
                    e["epoch"]
                    for e in entries
                    if e["kind"] == kind and (e["size"], e["sha256"]) == (digest["size"], digest["sha256"])
                ]
                files.append(
                    TorchFile(kind, path, epochs[0])
                    if epochs
                    else TorchFile(
                        kind, path, None, f"matches no checksum in {MANIFEST}: damaged, or its save was cut short"
                    )
                )
        return files


def save_torch(path: Path, obj: Any) -> None:
    """`torch.save` written atomically (temporary file, fsync, rename)."""
    write_atomic(path, lambda handle: torch.save(obj, handle), mode="wb")


def count_torch_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
