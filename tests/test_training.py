"""The trainer end to end on tiny fixtures: run folder, early stopping, NaN guard, exact resume after kill -9."""

import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from fer_jax.config import Config
from fer_jax.files import read_jsonl
from fer_jax.train import trainer as training
from fer_jax.train.evaluation import evaluate_run
from tests import forked
from tests.fixtures import make_faces, metrics_without_seconds, write_zip

ROOT = Path(__file__).resolve().parent.parent
METRIC_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}


def tiny_config(data: Path, tmp_path: Path, **overrides) -> Config:
    config = Config()
    config.data.source = str(data)
    config.data.cache_dir = str(tmp_path / "cache")
    config.run_dir = str(tmp_path / "run")
    config.apply_overrides(["train.batch_size=8", "train.eval_batch_size=16", "train.epochs=2"])
    config.apply_overrides([f"{k}={v}" for k, v in overrides.items()])
    return config


@pytest.mark.slow
def test_run_folder_holds_everything(tiny_zip, tmp_path):
    config = tiny_config(tiny_zip, tmp_path)
    config.train.crops_tta = True
    results = training.train(config, results_copy=str(tmp_path / "results" / "copy.json"))
    run = Path(config.run_dir)
    for name in (
        "config.json",
        "environment.json",
        "data_check.json",
        "metrics.jsonl",
        "curves.png",
        "confusion_matrix.png",
        "results.json",
    ):
        assert (run / name).is_file(), name
    assert Config.load(run / "config.json") == config
    rows = read_jsonl(run / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2] and all(set(row) == METRIC_KEYS for row in rows)
    env = json.loads((run / "environment.json").read_text())
    assert {"jax", "flax", "optax", "torch"} <= set(env["versions"]) and "git_commit" in env and env["device"]
    assert (run / "checkpoints" / "best").is_dir() and (run / "checkpoints" / "latest").is_dir()
    assert results["selected_on"] == "PublicTest" and results["reported_on"] == "PrivateTest"
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_images"] == 14
    assert results["dataset_sha256"] == hashlib.sha256(tiny_zip.read_bytes()).hexdigest()
    assert results["train_seconds"] == pytest.approx(sum(row["seconds"] for row in rows))
    assert results["curve"]["val_accuracy"] == [row["val_accuracy"] for row in rows]
    assert results["crops_views"] == 10 and 0.0 <= results["test_accuracy_crops"] <= 1.0
    assert json.loads((tmp_path / "results" / "copy.json").read_text()) == results
    assert evaluate_run(run)["test_accuracy"] == results["test_accuracy"]
    with pytest.raises(training.TrainingError, match="already holds a run"):
        training.train(config)


@pytest.mark.slow
def test_early_stopping_on_public_test(tiny_zip, tmp_path):
    config = tiny_config(
        tiny_zip,
        tmp_path,
        **{"train.epochs": 6, "train.patience": 2, "optim.learning_rate": 0.0, "optim.schedule": "constant"},
    )
    results = training.train(config)
    assert results["stop_reason"] == "early_stopping"
    assert results["epochs"] == 3 and results["best_epoch"] == 1


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_zip, tmp_path, monkeypatch):
    real_epoch = training._train_epoch

    def epoch_that_diverges(state, updates, config, epoch, images):
        state, metrics = real_epoch(state, updates, config, epoch, images)
        return state, {**metrics, "loss": math.nan} if epoch == 2 else metrics

    monkeypatch.setattr(training, "_train_epoch", epoch_that_diverges)
    config = tiny_config(tiny_zip, tmp_path, **{"train.epochs": 4})
    results = training.train(config)
    assert results["stop_reason"] == "non_finite_loss"
    assert results["epochs"] == 1 and results["best_epoch"] == 1
    assert [row["epoch"] for row in read_jsonl(Path(config.run_dir) / "metrics.jsonl")] == [1]


def cli_train(*args: str, log: Path) -> forked.Process:
    """`fer-jax train ARGS` in its own process (forked: see tests/forked.py), its output in `log`."""
    return forked.start(forked.fer_jax, ("train", *args), ROOT, dict(os.environ), log)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    data = write_zip(make_faces({"Training": 24, "PublicTest": 2, "PrivateTest": 2}), tmp_path / "fer2013.zip")
    common = [
        "--data",
        str(data),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--set",
        "train.eval_batch_size=16",
    ]
    with forked.server(dict(os.environ)):
        reference = cli_train(*common, "--run-dir", str(tmp_path / "reference"), log=tmp_path / "reference.log")
        reference.join(600)
        assert reference.exitcode == 0, (tmp_path / "reference.log").read_text()

        crashed = tmp_path / "crashed"
        victim = cli_train(*common, "--run-dir", str(crashed), log=tmp_path / "victim.log")
        deadline = time.monotonic() + 600
        while not (crashed / "metrics.jsonl").is_file() or not read_jsonl(crashed / "metrics.jsonl"):
            assert victim.is_alive(), (tmp_path / "victim.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Killed at once: a fast CPU runs the remaining epochs of 3 steps in well under a second.
        victim.kill()
        victim.join()
        assert victim.exitcode == -signal.SIGKILL
        finished = len(read_jsonl(crashed / "metrics.jsonl"))
        assert 1 <= finished < 3, "the kill did not land between the first and the last epoch"

        resumed = cli_train("--resume", str(crashed), log=tmp_path / "resumed.log")
        resumed.join(600)
        output = (tmp_path / "resumed.log").read_text()
        assert resumed.exitcode == 0, output
        assert "Resuming" in output and f"after epoch {finished}" in output

    assert metrics_without_seconds(crashed) == metrics_without_seconds(tmp_path / "reference")
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    got = json.loads((crashed / "results.json").read_text())
    for key in ("test_accuracy", "test_loss", "val_accuracy", "best_epoch", "epochs"):
        assert got[key] == expected[key], key


@pytest.mark.slow
def test_device_pipeline_is_reproducible_and_resumes_exactly(tiny_zip, tmp_path):
    """Same seed, same metrics; 1 epoch + resume to 2 equals 2 epochs straight (order and augmentation per epoch)."""
    # The default kernels: XLA's own convolution gradients are slow inside the scan of a dispatch (jax issue 12868).
    device = {"data.pipeline": "device", "train.steps_per_dispatch": 3, "train.patience": 0}
    device["optim.schedule"] = "constant"  # a cosine schedule depends on train.epochs, which the resume changes

    def metrics(run_dir: str) -> list[tuple[float, float, float]]:
        return [
            (row["train_loss"], row["train_accuracy"], row["val_loss"])
            for row in read_jsonl(Path(run_dir) / "metrics.jsonl")
        ]

    straight = tiny_config(tiny_zip, tmp_path / "a", **device)
    training.train(straight)
    again = tiny_config(tiny_zip, tmp_path / "b", **device)
    training.train(again)
    assert metrics(straight.run_dir) == metrics(again.run_dir)

    resumed = tiny_config(tiny_zip, tmp_path / "c", **{**device, "train.epochs": 1})
    training.train(resumed)
    resumed.train.epochs = 2
    training.train(resumed, resume=True)
    assert metrics(resumed.run_dir) == metrics(straight.run_dir)
