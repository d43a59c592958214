"""RunCheckpoints on tiny states (no training): weights-only restores, the EMA rules, and run folders saved by
earlier versions. The fault cases of whole runs are in test_crash_safety.py."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from fer_jax.train import keys
from fer_jax.train.checkpoints import CheckpointError, RunCheckpoints, write_manifest
from fer_jax.train.state import EmaTrainState, TrainState, selected_weights


def weights(offset: float) -> dict[str, nnx.State]:
    offset = float(offset)
    return {
        "params": nnx.State({"conv": {"kernel": jnp.arange(6.0).reshape(2, 3) + offset}}),
        "model_state": nnx.State({"norm": {"mean": jnp.full((3,), offset)}}),
    }


def tiny_state(epoch: int, ema: bool) -> TrainState:
    """A training state whose trained weights hold `epoch` and whose EMA weights (with `ema`) `epoch + 100`."""
    trained = weights(float(epoch))
    opt_state, step = {"mu": jnp.full((4,), -1.0)}, jnp.asarray(epoch, jnp.int32)
    state = TrainState(trained["params"], trained["model_state"], opt_state, step, keys.root_key(0))
    if not ema:
        return state
    return EmaTrainState(
        *(state.params, state.model_state, state.opt_state, state.step, state.key), weights(epoch + 100.0)
    )


def save_run(run_dir: Path, epochs: int, ema: bool) -> None:
    """A run folder after `epochs` epochs that each improved, saved as the trainer saves (best, then latest)."""
    checkpoints = RunCheckpoints(run_dir, ema=ema)
    try:
        for epoch in range(1, epochs + 1):
            state = tiny_state(epoch, ema)
            checkpoints.save("best", epoch, selected_weights(state), {"epoch": epoch, "kind": "best"})
            checkpoints.save("latest", epoch, state, {"epoch": epoch, "kind": "latest"})
    finally:
        checkpoints.close()


def restore_weights(run_dir: Path, which: str, ema: bool, like=None) -> tuple[dict, dict]:
    checkpoints = RunCheckpoints(run_dir, ema=ema)
    try:
        return checkpoints.restore_weights(which, like if like is not None else weights(0.0))
    finally:
        checkpoints.close()


def assert_weights(restored: dict, offset: float) -> None:
    expected = weights(offset)
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        assert got.dtype == want.dtype and jnp.array_equal(got, want)


def flip_bytes(step: Path) -> None:
    path = max((p for p in (step / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("which", ["latest", "best"])
def test_restore_weights_reads_the_selected_weights_only(ema, which, tmp_path, capsys):
    save_run(tmp_path, 3, ema)
    restored, record = restore_weights(tmp_path, which, ema)
    assert record == {"epoch": 3, "kind": which}
    assert_weights(restored, 3 + (100 if ema else 0))  # with EMA, a latest step's `ema` and best's params
    assert "warning" not in capsys.readouterr().err


def test_restore_weights_into_shapes_and_dtypes(tmp_path):
    """`like` may be abstract: the weights come back as arrays of its shapes and dtypes."""
    save_run(tmp_path, 1, ema=False)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), weights(0.0))
    restored, _ = restore_weights(tmp_path, "best", ema=False, like=like)
    assert_weights(restored, 1)


@pytest.mark.parametrize("ema", [False, True])
def test_a_damaged_best_falls_back_to_the_latest_of_its_epoch(ema, tmp_path, capsys):
    save_run(tmp_path, 3, ema)
    flip_bytes(tmp_path / "checkpoints" / "best" / "3")
    restored, record = restore_weights(tmp_path, "best", ema)
    assert record == {"epoch": 3, "kind": "latest"}
    assert_weights(restored, 3 + (100 if ema else 0))
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert "best/3/state/" in warning and warning.endswith(f"; using {tmp_path}/checkpoints/latest/3")

    checkpoints = RunCheckpoints(tmp_path, ema=ema)  # the whole state falls back the same way, EMA swapped in
    try:
        state, _ = checkpoints.restore("best", tiny_state(0, ema))
    finally:
        checkpoints.close()
    assert_weights({"params": state.params, "model_state": state.model_state}, 3 + (100 if ema else 0))

    flip_bytes(tmp_path / "checkpoints" / "latest" / "3")
    with pytest.raises(CheckpointError, match="no readable best checkpoint .*best/3.*latest/3"):
        restore_weights(tmp_path, "best", ema)


def test_a_damaged_latest_falls_back_to_the_previous_one(tmp_path, capsys):
    save_run(tmp_path, 3, ema=True)
    flip_bytes(tmp_path / "checkpoints" / "latest" / "3")
    restored, record = restore_weights(tmp_path, "latest", ema=True)
    assert record["epoch"] == 2 and "latest/3/state/" in capsys.readouterr().err
    assert_weights(restored, 102)


def test_with_ema_a_best_step_never_stands_in_for_a_latest_one(tmp_path):
    """Its params are the EMA weights, and its optimizer state belongs to other weights: resuming from it would
    continue another run. Without EMA a best step holds the same full state as the latest of its epoch."""
    save_run(tmp_path, 1, ema=True)
    os.rename(tmp_path / "checkpoints" / "latest", tmp_path / "latest-gone")
    with pytest.raises(CheckpointError, match="no readable latest checkpoint"):
        RunCheckpoints(tmp_path, ema=True).resume(tiny_state(0, ema=True), finished_epochs=1)
    state, record = RunCheckpoints(tmp_path, ema=False).resume(tiny_state(0, ema=True), finished_epochs=1)
    assert record["kind"] == "best" and int(state.step) == 1


def save_as_before(run_dir: Path, which: str, epoch: int, state, record: dict) -> None:
    """A step as fer-jax saved it before its checkpoints went through Orbax's CheckpointManager: a Composite
    of `state` (StandardSave) and `record` (JsonSave) committed by a plain Checkpointer, and `checksums.json`
    listing every file but Orbax's commit marks."""
    temporary = run_dir / "checkpoints" / which / f"{epoch}.before"
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        checkpointer.save(
            temporary, args=ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        )
    finally:
        checkpointer.close()
    write_manifest(temporary, epoch)
    os.rename(temporary, temporary.with_name(str(epoch)))


@pytest.mark.parametrize("ema", [False, True])
def test_a_run_folder_saved_before_restores_and_resumes(ema, tmp_path, capsys):
    for epoch in (1, 2):
        state = tiny_state(epoch, ema)
        save_as_before(tmp_path, "best", epoch, selected_weights(state), {"epoch": epoch})
        save_as_before(tmp_path, "latest", epoch, state, {"epoch": epoch})
    for which in ("best", "latest"):
        restored, record = restore_weights(tmp_path, which, ema)
        assert record == {"epoch": 2}
        assert_weights(restored, 2 + (100 if ema else 0))
    checkpoints = RunCheckpoints(tmp_path, ema=ema)
    try:
        state, record = checkpoints.resume(tiny_state(0, ema), finished_epochs=2)
        assert record == {"epoch": 2} and int(state.step) == 2
        assert_weights({"params": state.params, "model_state": state.model_state}, 2)
        checkpoints.save("latest", 3, tiny_state(3, ema), {"epoch": 3})  # the resumed run saves on beside them
    finally:
        checkpoints.close()
    assert RunCheckpoints(tmp_path).steps("latest") == [3, 2]
    assert "warning" not in capsys.readouterr().err


def test_saves_keep_two_latest_and_one_best_step_folders_each_with_its_manifest(tmp_path):
    save_run(tmp_path, 4, ema=False)
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["best", "latest"]
    assert sorted(os.listdir(root / "latest")) == ["3", "4"] and os.listdir(root / "best") == ["4"]
    for step in ("latest/3", "latest/4", "best/4"):
        assert (root / step / "checksums.json").is_file()
