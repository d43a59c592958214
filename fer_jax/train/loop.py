"""The epoch loop and run bookkeeping that the JAX trainer and the PyTorch baseline share.

Early stopping on PublicTest, the NaN guard, checkpoint timing, metrics.jsonl,
curves and the results summary live here once, so the two frameworks differ
only in their train step, evaluation and checkpoint format.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_jax.config import Config
from fer_jax.data.check import REPORT_FILE
from fer_jax.data.fer2013 import Split
from fer_jax.environment import environment_info
from fer_jax.errors import TrainingError
from fer_jax.files import FileFormatError, read_json, read_jsonl, write_json, write_jsonl
from fer_jax.models.layers import resolve_compute_dtype
from fer_jax.train import plotting
from fer_jax.train.checkpoints import move_aside, set_aside_stamp
from fer_jax.train.distributed import is_writer
from fer_jax.train.tensorboard_log import RunBoard

CURVE_KEYS = ("seconds", "train_accuracy", "val_accuracy")
"""The per-epoch fields of metrics.jsonl that results.json keeps as its `curve`."""


@dataclass(frozen=True)
class EpochHooks:
    """What a framework supplies to `run_epochs`."""

    train_epoch: Callable[[int], dict[str, float]]
    """Train one epoch (1-based); return its mean 'loss' and 'accuracy' on the augmented batches."""
    validate: Callable[[], dict[str, Any]]
    """'loss' and 'accuracy' on PublicTest."""
    learning_rate: Callable[[int], float]
    """The learning rate after the given (finished) epoch."""
    save: Callable[[str, int, dict[str, Any]], None]
    """Save a checkpoint: ('best' or 'latest', epoch, record)."""


def new_record() -> dict[str, Any]:
    """The early-stopping state and metrics history that checkpoints carry."""
    return {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "epochs_without_improvement": 0, "history": []}


def check_new_run(run_dir: Path, has_checkpoint: bool, resume: bool) -> None:
    """Refuse to start a new run in a folder that holds checkpoints or finished epochs, unless resuming."""
    if (has_checkpoint or finished_epochs(run_dir)) and not resume:
        raise TrainingError(
            f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or another --run-dir"
        )


def steps_per_epoch(config: Config, train_split: Split) -> int:
    steps = len(train_split) // config.train.batch_size
    if steps == 0:
        raise TrainingError(f"{len(train_split)} training images are fewer than one batch of {config.train.batch_size}")
    return steps


def finished_epochs(run_dir: Path) -> int:
    """How many epochs metrics.jsonl records as finished (0 without the file)."""
    path = run_dir / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


def start_run(config: Config, record: dict[str, Any], framework: str, images_per_epoch: int) -> RunBoard | None:
    """Write config.json, environment.json and the metrics so far (the checkpoint's history) into the run folder.

    A metrics.jsonl that is not the start of that history (epochs past the checkpoint the run
    continues from, or other rows) is set aside under `set-aside/`, never truncated. In a multi-process
    run only process 0 writes. Returns the run's TensorBoard event file, which holds that history too
    (`RunBoard.start`).
    """
    if not is_writer():
        return None
    run_dir = Path(config.run_dir)
    write_json(run_dir / "config.json", config.to_dict())
    write_environment(run_dir, record["epoch"])
    metrics, history = run_dir / "metrics.jsonl", record["history"]
    if metrics.is_file():
        try:
            rows = read_jsonl(metrics)
        except FileFormatError:
            rows = None
        if rows is None or rows != history[: len(rows)]:
            reason = (
                f"it records {len(rows)} epochs; the run continues from the checkpoint of epoch {record['epoch']}"
                if rows is not None and len(rows) > len(history)
                else "it differs from the checkpoint's history"
            )
            move_aside(metrics, run_dir, reason, set_aside_stamp())
    write_jsonl(metrics, history)
    return RunBoard.start(config, framework, history, images_per_epoch)


ENVIRONMENT_FILE = "environment.json"


def write_environment(run_dir: Path, resumed_after: int) -> None:
    """Write what this start of the run runs on to environment.json. A run that continues after finished epochs
    keeps the first start's record (its commit and machine trained them) and appends this start's to the record's
    `resumes` list, with `resumed_after` (the epoch it continues after); an unreadable record is set aside and the
    first start is then recorded as unknown, never as this one."""
    path = run_dir / ENVIRONMENT_FILE
    info = environment_info()
    if not resumed_after:
        write_json(path, info)
        return
    try:
        first = read_json(path, "environment record")
    except FileFormatError as err:  # missing, or damaged: set aside
        if path.exists():
            move_aside(path, run_dir, str(err), set_aside_stamp())
        first = {"first_start": f"unknown: {err}"}
    write_json(path, {**first, "resumes": [*_list(first.get("resumes")), {**info, "resumed_after": resumed_after}]})


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def patience_exhausted(config: Config, record: dict[str, Any]) -> bool:
    return bool(config.train.patience) and record["epochs_without_improvement"] >= config.train.patience


def train_and_validate(hooks: EpochHooks, epoch: int) -> dict[str, Any]:
    """Train epoch `epoch`, validate on PublicTest; its metrics.jsonl row."""
    start = time.perf_counter()
    train = hooks.train_epoch(epoch)
    val = hooks.validate()
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "learning_rate": hooks.learning_rate(epoch),
        "seconds": time.perf_counter() - start,
    }


def next_record(record: dict[str, Any], row: dict[str, Any], improved: bool) -> dict[str, Any]:
    """The early-stopping state and history after the epoch of `row`."""
    return {
        "epoch": row["epoch"],
        "best_val_accuracy": max(row["val_accuracy"], record["best_val_accuracy"]),
        "best_epoch": row["epoch"] if improved else record["best_epoch"],
        "epochs_without_improvement": 0 if improved else record["epochs_without_improvement"] + 1,
        "history": record["history"] + [row],
    }


def run_epochs(
    config: Config, record: dict[str, Any], hooks: EpochHooks, board: RunBoard | None = None
) -> tuple[dict[str, Any], str]:
    """Train from the epoch after `record['epoch']` until max epochs, early stopping or a non-finite loss.

    Returns the final record and why it stopped. A checkpoint is saved after
    every finished epoch ('latest') and on every PublicTest improvement ('best'),
    in an order a crash cannot break: 'best' first, then 'latest', then
    metrics.jsonl. Killed after 'best', the run resumes from the previous latest
    (or from that best, which holds the same state without EMA); after 'latest',
    from it, and metrics.jsonl is rewritten from its history. `board` logs each epoch once metrics.jsonl
    holds it.
    """
    run_dir = Path(config.run_dir)
    stop_reason = "early_stopping" if patience_exhausted(config, record) else "max_epochs"
    first_epoch = config.train.epochs + 1 if stop_reason == "early_stopping" else record["epoch"] + 1
    for epoch in range(first_epoch, config.train.epochs + 1):
        row = train_and_validate(hooks, epoch)
        if not math.isfinite(row["train_loss"]):
            print(f"Epoch {epoch}: training loss is {row['train_loss']}; stopping and keeping the last good checkpoint")
            return record, "non_finite_loss"
        improved = row["val_accuracy"] > record["best_val_accuracy"]
        record = next_record(record, row, improved)
        if improved:
            hooks.save("best", epoch, record)
        hooks.save("latest", epoch, record)
        if is_writer():
            write_jsonl(run_dir / "metrics.jsonl", record["history"])
            plotting.plot_curves(record["history"], run_dir / "curves.png")
        if board:
            board.epoch(row)
        print(
            f"Epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}{' (best)' if improved else ''} | "
            f"{row['seconds']:.1f}s"
        )
        if patience_exhausted(config, record):
            print(f"Early stopping: no better PublicTest accuracy in {config.train.patience} epochs")
            return record, "early_stopping"
    return record, stop_reason


def summarize(
    config: Config,
    best_epoch: int,
    val: dict[str, Any],
    test: dict[str, Any],
    splits: dict[str, Split],
    parameters: int,
    device: str,
    matrix: list[list[int]],
    flip_tta: dict[str, float],
) -> dict[str, Any]:
    """The results of a run's best checkpoint; also writes its PrivateTest confusion matrix PNG.

    `test_accuracy` and `val_accuracy` are without test-time augmentation; `flip_tta`
    holds the 'val' and 'test' accuracies with flip TTA (softmax averaged over each
    face and its mirror image). `weights` says whether the checkpoint holds the EMA weights or the trained
    ones; `provenance` and `epoch_seconds` give their fields; `curve` holds each epoch's `CURVE_KEYS` (for
    time-to-accuracy plots, without the run folder).
    """
    run_dir = Path(config.run_dir)
    show_best(run_dir, best_epoch, val["accuracy"], test["accuracy"], flip_tta["test"], matrix)
    history = read_jsonl(run_dir / "metrics.jsonl")
    return {
        "model": config.model.name,
        "test_accuracy": test["accuracy"],
        "test_accuracy_tta": flip_tta["test"],
        "tta": "flip",
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_accuracy_tta": flip_tta["val"],
        "selected_on": "PublicTest",
        "reported_on": "PrivateTest",
        "weights": "ema" if config.train.ema_decay else "trained",
        "best_epoch": best_epoch,
        **epoch_seconds([row["seconds"] for row in history]),
        "train_images": len(splits["Training"]),
        "val_images": len(splits["PublicTest"]),
        "test_images": len(splits["PrivateTest"]),
        "parameters": parameters,
        "confusion_matrix": matrix,
        "device": device,
        "compute_dtype": resolve_compute_dtype(config.model.compute_dtype),
        **provenance(run_dir),
        "run_dir": str(run_dir),
        "curve": {key: [row[key] for row in history] for key in CURVE_KEYS},
    }


def show_best(
    run_dir: Path, best_epoch: int, val_accuracy: float, test_accuracy: float, tta: float, matrix: list[list[int]]
) -> None:
    """Print the best checkpoint's accuracies; plot its PrivateTest confusion matrix (process 0)."""
    if is_writer():
        plotting.plot_confusion_matrix(
            matrix, run_dir / "confusion_matrix.png", title=f"PrivateTest, best checkpoint (epoch {best_epoch})"
        )
    print(
        f"Best epoch {best_epoch}: PublicTest accuracy {val_accuracy:.4f}, "
        f"PrivateTest accuracy {test_accuracy:.4f} (flip TTA {tta:.4f})"
    )


def epoch_seconds(seconds: list[float]) -> dict[str, Any]:
    """The run's epoch count and wall seconds per epoch (evaluation on PublicTest included): the mean after the
    first (which compiles), the first, and their sum, `train_seconds`."""
    return {
        "epochs": len(seconds),
        "seconds_per_epoch": sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else seconds[0],
        "first_epoch_seconds": seconds[0],
        "train_seconds": sum(seconds),
    }


def provenance(run_dir: Path) -> dict[str, Any]:
    """What a run's results say of where they come from: the machine's CPU features and XLA flags and the commit
    of its first start (`git_commit`, from environment.json), its resumes' commits (`resumed_at`, only for a
    resumed run), and the trained-on archive's sha256 as its data check records it (None for a folder)."""
    data_check = run_dir / REPORT_FILE
    environment = read_json(run_dir / ENVIRONMENT_FILE, "environment record")
    resumes = [r for r in _list(environment.get("resumes")) if isinstance(r, dict)]
    return {
        **{key: environment.get(key) for key in ("cpu_features", "xla_flags", "git_commit")},
        **({"resumed_at": [resume.get("git_commit") for resume in resumes]} if resumes else {}),
        "dataset_sha256": read_json(data_check, "data check").get("dataset_sha256") if data_check.is_file() else None,
    }


def finish_run(
    config: Config,
    results: dict[str, Any],
    stop_reason: str,
    framework: str,
    results_copy: str | None = None,
    board: RunBoard | None = None,
) -> dict[str, Any]:
    """Add how the run ended, write results.json (and a copy, e.g. under results/), log the results to `board`."""
    results.update(stop_reason=stop_reason, command=environment_info()["command"], framework=framework)
    if is_writer():
        write_json(Path(config.run_dir) / "results.json", results)
        if results_copy:
            write_json(results_copy, results)
    if board:
        board.finish(results)
    return results
