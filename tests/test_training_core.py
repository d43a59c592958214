"""The training core: independent random streams, one compile per configuration, the accelerator's scan path on
the CPU, metrics read one dispatch behind, and weights restored without an optimizer."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from experiments import run as experiment_run
from fer_jax.config import Config
from fer_jax.files import write_json
from fer_jax.models.zoo import model_skeleton
from fer_jax.train import keys, loop
from fer_jax.train import trainer as training
from fer_jax.train.checkpoints import RunCheckpoints
from fer_jax.train.state import as_saved, from_saved, split_model
from fer_jax.train.steps import init_state, make_train_chunk, make_train_step
from tests.test_training import tiny_config

SEEDS = (0, 1, 2)
STEPS = 64


def key_bits(key: jax.Array) -> tuple[int, ...]:
    return tuple(jax.random.key_data(key).ravel().tolist())


def test_no_two_streams_and_no_two_seeds_share_a_key():
    step_keys = jax.jit(jax.vmap(keys.step_key, in_axes=(None, None, 0)), static_argnums=1)
    seen: dict[tuple[int, ...], tuple[int, str, int]] = {}
    for seed in SEEDS:
        root = keys.root_key(seed)
        for name in keys.STREAMS:
            seen.setdefault(key_bits(keys.stream(root, name)), (seed, name, -1))
            for step, data in enumerate(jax.random.key_data(step_keys(root, name, jnp.arange(STEPS))).tolist()):
                seen.setdefault(tuple(data), (seed, name, step))
    assert len(seen) == len(SEEDS) * len(keys.STREAMS) * (STEPS + 1)  # no key drawn twice


def test_no_stream_of_seed_s_draws_the_bits_of_another_stream_or_seed():
    draws = {
        (seed, name): tuple(jax.random.bits(keys.stream(keys.root_key(seed), name), (16,)).tolist())
        for seed in SEEDS
        for name in keys.STREAMS
    }
    assert len(set(draws.values())) == len(draws)


def test_mixup_draws_from_no_dropout_layers_key():
    """A dropout layer gets `nnx.Rngs(dropout=step key)`'s draws; mixup splits its own stream's step key."""
    root = keys.root_key(0)
    for step in range(8):
        rngs = nnx.Rngs(dropout=keys.step_key(root, "dropout", step))
        layer_keys = {key_bits(rngs.dropout()) for _ in range(8)}
        mixup = keys.step_key(root, "mixup", step)
        assert not layer_keys & {key_bits(mixup), *(key_bits(k) for k in jax.random.split(mixup))}


def test_an_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="unknown random stream 'noise'"):
        keys.stream(keys.root_key(0), "noise")


@pytest.mark.slow
def test_two_seeds_compile_the_train_step_once(tiny_zip, tmp_path, caplog):
    # A learning rate no other test uses: these steps are built afresh in this process.
    args = ["seed_cnn_adam", "--data", str(tiny_zip), "--seeds", "2", "--runs", str(tmp_path / "runs")]
    for setting in ("train.epochs=1", "train.batch_size=8", "train.eval_batch_size=16", "optim.learning_rate=0.000731"):
        args += ["--set", setting]
    args += ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.pipeline=device"]
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        assert experiment_run.main(args) == 0
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling jit(train_chunk)")]
    summaries = list((tmp_path / "runs" / "seed_cnn_adam").glob("*/seed1/results.json"))
    assert len(compiled) == 1 and summaries, compiled


@pytest.mark.slow
def test_the_scan_chunk_matches_the_unrolled_one():
    """The accelerators' `lax.scan` path (the default off the CPU) run on the CPU: same metrics and weights."""
    # float32 and SGD: bfloat16 rounding, and Adam's first updates of about +-lr whatever the gradient, would
    # amplify the programs' different float rounding over three steps.
    overrides = ["model.compute_dtype=float32", "train.batch_size=4", "optim.name=sgd", "optim.learning_rate=0.01"]
    config = Config().apply_overrides(overrides)
    state, steps = init_state(config, steps_per_epoch=10)
    graph, _, _ = split_model(model_skeleton(config.model))
    train_step = make_train_step(graph, steps.tx, config, steps.mesh)
    images = jax.random.randint(jax.random.key(0), (12, 48, 48), 0, 256).astype(jnp.uint8)
    labels = jnp.arange(12) % 7
    indices = jnp.arange(12).reshape(3, 4)
    out = {}
    for scan in (True, False):
        chunk = jax.jit(make_train_chunk(train_step, config.data, scan))
        new_state, metrics = chunk(jax.tree.map(jnp.copy, state), images, labels, indices)
        out[scan] = (metrics, new_state)
    (scanned, scan_state), (unrolled, unrolled_state) = out[True], out[False]
    assert int(scanned["correct"]) == int(unrolled["correct"]) and int(scan_state.step) == 3
    assert float(scanned["loss"]) == pytest.approx(float(unrolled["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(scan_state.params), jax.tree.leaves(unrolled_state.params), strict=True):
        assert jnp.allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_a_chunk_is_dispatched_before_the_previous_metrics_are_read(tiny_zip, tmp_path, monkeypatch):
    events: list[tuple[str, int]] = []
    real_traced, real_read = training.traced, training.read_metrics

    def traced(updates, trace, batch_size):
        def run(state, epoch):
            dispatched = 0
            for state, out, images in real_traced(updates, trace, batch_size)(state, epoch):  # noqa: B020
                dispatched += images
                events.append(("dispatched", dispatched))
                yield state, out, images

        return run

    def read_metrics(sums, count):
        events.append(("read", count))
        return real_read(sums, count)

    monkeypatch.setattr(training, "traced", traced)
    monkeypatch.setattr(training, "read_metrics", read_metrics)
    monkeypatch.setattr(training, "LOG_EVERY_STEPS", 1)  # a read every second dispatch
    overrides = {"train.epochs": 1, "data.pipeline": "device", "train.steps_per_dispatch": 1}
    config = tiny_config(tiny_zip, tmp_path, **overrides)
    training.train(config)
    reads = [(i, count) for i, (kind, count) in enumerate(events) if kind == "read"]
    assert len(reads) >= 2  # one during the epoch, one at its end
    for i, count in reads[:-1]:
        assert events[i - 1][0] == "dispatched" and count < events[i - 1][1]  # the newest chunk is still queued
    assert reads[-1][1] == max(count for kind, count in events if kind == "dispatched")  # the epoch's end: all


TRAINING_MODULES = ("fer_jax.train.optim", "fer_jax.train.steps", "fer_jax.train.state", "fer_jax.train.trainer")


@pytest.mark.slow
def test_weights_restore_without_the_optimizer_or_train_step_modules(tiny_zip, tmp_path):
    """`export-weights` and `evaluate`'s restore in a fresh process: the weights equal the saved ones, and no module
    that builds an optimizer, a schedule, a train step or a training state was imported."""
    config = tiny_config(tiny_zip, tmp_path, **{"train.epochs": 1})
    state, _ = init_state(config, 1)
    write_json(Path(config.run_dir) / "config.json", config.to_dict())
    checkpoints = RunCheckpoints(config.run_dir)
    checkpoints.save("best", 1, state, {**loop.new_record(), "best_epoch": 1})
    checkpoints.close()
    script = (
        "import json, sys, jax\n"
        "from fer_jax.cli import main\n"
        "from fer_jax.train.restore import restore_weights\n"
        f"assert main(['export-weights', {config.run_dir!r}, '--out', {str(tmp_path / 'w.msgpack')!r}]) == 0\n"
        f"_, weights, record = restore_weights({config.run_dir!r})\n"
        "print('LEAVES', json.dumps([float(leaf.sum()) for leaf in jax.tree.leaves(weights)]))\n"
        f"print('IMPORTED', [m for m in {TRAINING_MODULES!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("LEAVES", "IMPORTED")))
    assert lines["IMPORTED"] == "[]"
    saved = [float(leaf.sum()) for leaf in jax.tree.leaves(state.weights)]
    assert json.loads(lines["LEAVES"]) == pytest.approx(saved, rel=1e-6)


@flax.struct.dataclass
class StateBeforeKeys:
    """The `TrainState` of commit 881891b and earlier, which carried no key."""

    params: nnx.State
    model_state: nnx.State
    opt_state: Any
    step: jax.Array


def test_a_run_saved_before_states_carried_keys_resumes_and_new_saves_keep_its_format(tmp_path):
    config = Config().apply_overrides(["train.batch_size=4"])
    state, _ = init_state(config, 1)
    old = StateBeforeKeys(state.params, state.model_state, state.opt_state, state.step + 7)
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save("latest", 1, old, {**loop.new_record(), "epoch": 1})
    checkpoints.close()
    checkpoints = RunCheckpoints(tmp_path)
    try:
        resumed, record = checkpoints.resume(as_saved(state), finished_epochs=1)
        checkpoints.save("latest", 2, as_saved(from_saved(resumed, state.key)), {**record, "epoch": 2})
        again, _ = checkpoints.restore(
            "latest", StateBeforeKeys(*(getattr(old, f) for f in ("params", "model_state", "opt_state", "step")))
        )
    finally:
        checkpoints.close()
    assert record["epoch"] == 1 and int(resumed["step"]) == int(old.step) and "key" not in resumed
    assert int(again.step) == int(old.step)  # the new save reads back as the old format
