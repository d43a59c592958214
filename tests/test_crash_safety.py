"""Fault injection: a crash at every save point and damaged checkpoints, on tiny runs.

One uninterrupted 3-epoch run is the reference. While it runs, hooks at each save point copy the
run folder as it is on disk at that instant (hard links: nothing in a run folder is rewritten in
place): that copy is the folder a `kill -9` at that point leaves. Each case resumes such a copy
(or a damaged copy of the finished run) with `fer-jax train --resume` and must end with the
reference's metrics, results and no metrics line lost, or with one clear error line. One more
case crashes a real run with an exception inside an Orbax commit. The PyTorch baseline's
checkpoints are crashed at each rename of a save and damaged, on tiny objects.

Scaffolding that keeps this fast and every save point reachable: PublicTest accuracy is fixed
per epoch (`VAL_ACCURACY`), plots are skipped; all runs share one set of jitted steps, as every run of one
configuration in a process does (`fer_jax.train.steps.build_steps`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jax.numpy as jnp
import pytest
import torch
from orbax.checkpoint._src.path import atomicity

from fer_jax.baseline.checkpoints import TorchCheckpoints
from fer_jax.cli import main
from fer_jax.config import Config
from fer_jax.files import read_jsonl
from fer_jax.train import checkpoints, loop
from fer_jax.train import trainer as training
from fer_jax.train.checkpoints import MANIFEST, SET_ASIDE, CheckpointError, RunCheckpoints
from fer_jax.train.evaluation import evaluate_run
from fer_jax.train.restore import restore_weights
from tests.fixtures import metrics_without_seconds

pytestmark = pytest.mark.slow  # every test here runs training end to end

EPOCHS = 3
STEPS_PER_EPOCH = 3  # 28 training images (4 per class), batch 8
VAL_ACCURACY = {1: 0.3, 2: 0.6, 3: 0.5}
"""PublicTest accuracy the epochs report: epochs 1 and 2 improve, 3 does not, so the finished run
has best/2 and latest/{2,3}, and every save point of epoch 2 is reached."""
RESULT_KEYS = ("test_accuracy", "test_loss", "val_accuracy", "best_epoch", "epochs", "stop_reason")


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way handles it."""


@contextmanager
def fixed_validation() -> Iterator[None]:
    """Replace the PublicTest accuracy the trainer selects on by VAL_ACCURACY[epoch] (from the step)."""
    real = training._EpochRun.validate

    def validate(run: training._EpochRun) -> dict:
        return {**real(run), "accuracy": VAL_ACCURACY[int(run.state.step) // STEPS_PER_EPOCH]}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training._EpochRun, "validate", validate)
        yield


@contextmanager
def no_plots() -> Iterator[None]:
    """Skip the PNGs (curves, confusion matrix): not what these tests check, and a third of a tiny run's time."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_curves", "plot_confusion_matrix"):
            patch.setattr(loop.plotting, name, lambda *args, **kwargs: None)
        yield


@contextmanager
def scaffolding() -> Iterator[None]:
    with fixed_validation(), no_plots():
        yield


@pytest.fixture(autouse=True)
def _scaffolding() -> Iterator[None]:
    with scaffolding():
        yield


def tiny_config(data: Path, root: Path, name: str) -> Config:
    config = Config()
    config.data.source = str(data)
    config.data.cache_dir = str(root / "cache")
    config.run_dir = str(root / name)
    config.apply_overrides(["train.batch_size=8", "train.eval_batch_size=16", f"train.epochs={EPOCHS}"])
    return config


def clone(source: Path, target: Path) -> Path:
    """A copy of a run folder made of hard links (cheap; safe as long as nothing rewrites a file in place)."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def rewrite(path: Path, data: bytes) -> None:
    """Replace a file's bytes in a new inode, so the hard-linked snapshots keep theirs."""
    path.unlink()
    path.write_bytes(data)


@pytest.fixture(scope="module")
def reference(tiny_zip, tmp_path_factory) -> dict:
    """The uninterrupted run, and a snapshot of its folder at each save point, named as `snapshot` names them."""
    root = tmp_path_factory.mktemp("crash")
    config = tiny_config(tiny_zip, root, "reference")
    run_dir = Path(config.run_dir)
    snapshots = root / "snapshots"

    def snapshot(point: str) -> None:
        if not (snapshots / point).exists():
            clone(run_dir, snapshots / point)

    real_save, real_commit = RunCheckpoints.save, atomicity.on_commit_callback
    real_manifest, real_rmtree = checkpoints.write_manifest, shutil.rmtree

    def save(self, which, epoch, state, record):
        snapshot(f"before {which} {epoch}")
        real_save(self, which, epoch, state, record)
        snapshot(f"after {which} {epoch}")

    async def commit(tmp_dir, **kwargs):
        final = Path(tmp_dir.get_final())
        snapshot(f"inside orbax commit {final.parent.name} {final.name}")
        await real_commit(tmp_dir, **kwargs)

    def write_manifest(folder, epoch):
        snapshot(f"before manifest {folder.parent.name} {epoch}")
        real_manifest(folder, epoch)

    def rmtree(path, *args, **kwargs):
        if Path(path).parent.name in checkpoints.KEEP:
            snapshot(f"pruning {Path(path).parent.name} {Path(path).name}")
        real_rmtree(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, scaffolding():
        patch.setattr(RunCheckpoints, "save", save)
        patch.setattr(atomicity, "on_commit_callback", commit)
        patch.setattr(checkpoints, "write_manifest", write_manifest)
        patch.setattr(shutil, "rmtree", rmtree)  # Orbax prunes with shutil.rmtree
        results = training.train(config)
    snapshot("finished")
    return {
        "root": root,
        "snapshots": snapshots,
        "metrics": metrics_without_seconds(run_dir),
        "results": results,
        "data": tiny_zip,
    }


def metrics_rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []


def set_aside(run_dir: Path) -> list[str]:
    """What resume moved aside, as paths relative to the run folder (without the timestamp folder)."""
    root = run_dir / SET_ASIDE
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(stamp))
        for stamp in root.iterdir()
        for p in stamp.rglob("*")
        if p.name == "metrics.jsonl" or p.parent.name in checkpoints.KEEP
    )


def resume(run_dir: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["train", "--resume", str(run_dir)])
    out, err = capsys.readouterr()
    return code, out, "\n".join(line for line in err.splitlines() if not re.match(r"\s*Epoch \d+/", line))


def assert_matches_reference(run_dir: Path, reference: dict, before: list[dict]) -> None:
    """The resumed run ends like the uninterrupted one, and every metrics line it started with is kept somewhere."""
    assert metrics_without_seconds(run_dir) == reference["metrics"]
    results = json.loads((run_dir / "results.json").read_text())
    for key in RESULT_KEYS:
        assert results[key] == reference["results"][key], key
    kept = metrics_rows(run_dir / "metrics.jsonl") + [
        row for path in (run_dir / SET_ASIDE).rglob("metrics.jsonl") for row in read_jsonl(path)
    ]
    assert all(row in kept for row in before)


@pytest.mark.parametrize(
    "point, resumed_after, moved, warned",
    [
        ("after best 1", 1, [], None),  # best/1, no latest at all: its best holds the full state
        ("before best 2", 1, [], None),
        ("inside orbax commit best 2", 1, ["checkpoints/best/2.orbax-checkpoint-tmp"], None),
        ("before manifest best 2", 1, ["checkpoints/best/2.orbax-checkpoint-tmp"], None),  # inside the commit
        ("pruning best 1", 2, [], None),
        ("after best 2", 2, [], None),  # between best and latest
        ("inside orbax commit latest 2", 2, ["checkpoints/latest/2.orbax-checkpoint-tmp"], None),
        ("before manifest latest 2", 2, ["checkpoints/latest/2.orbax-checkpoint-tmp"], None),
        ("after latest 2", 2, [], None),  # metrics.jsonl one line short of the checkpoint
        ("pruning latest 1", 3, [], None),  # three latest; nothing left to train
    ],
)
def test_a_crash_at_any_save_point_resumes_to_the_same_run(
    point, resumed_after, moved, warned, reference, tmp_path, capsys
):
    run_dir = clone(reference["snapshots"] / point, tmp_path / "run")
    before = metrics_rows(run_dir / "metrics.jsonl")
    code, out, err = resume(run_dir, capsys)
    assert code == 0, err
    assert f"Resuming {run_dir} after epoch {resumed_after}" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == (
        []
        if warned is None
        else [
            f"warning: {run_dir}/checkpoints/{warned[0]} has no {MANIFEST}: its save was cut short "
            f"(or the manifest was deleted); using {run_dir}/checkpoints/{warned[1]}"
        ]
    )
    assert [path for path in set_aside(run_dir) if not path.endswith("metrics.jsonl")] == moved
    assert_matches_reference(run_dir, reference, before)


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(step: Path) -> str:
    path = largest_file(step / "state")
    rewrite(path, path.read_bytes()[: path.stat().st_size // 2])
    return str(path.relative_to(step))


def flip_bytes(step: Path) -> str:
    path = largest_file(step / "state")
    data = bytearray(path.read_bytes())
    data[1000:5096] = bytes(b ^ 0xFF for b in data[1000:5096])  # 4 KB
    rewrite(path, bytes(data))
    return str(path.relative_to(step))


def delete_orbax_manifest(step: Path) -> str:
    (step / "state" / "manifest.ocdbt").unlink()
    return "state/manifest.ocdbt"


def delete_checksums(step: Path) -> str:
    (step / MANIFEST).unlink()
    return MANIFEST


@pytest.mark.parametrize("damage", [truncate, flip_bytes, delete_orbax_manifest, delete_checksums])
def test_a_damaged_latest_falls_back_to_the_previous_one(damage, reference, tmp_path, capsys):
    run_dir = clone(reference["snapshots"] / "finished", tmp_path / "run")
    damaged = damage(run_dir / "checkpoints" / "latest" / "3")
    before = metrics_rows(run_dir / "metrics.jsonl")
    code, out, err = resume(run_dir, capsys)
    assert code == 0, err
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert str(run_dir / "checkpoints" / "latest" / "3") in warning
    assert warning.endswith(f"; using {run_dir}/checkpoints/latest/2")
    assert damaged in warning or MANIFEST in warning
    assert f"Resuming {run_dir} after epoch 2" in out
    assert set_aside(run_dir) == ["checkpoints/latest/3", "metrics.jsonl"]  # metrics.jsonl: one line past epoch 2
    assert_matches_reference(run_dir, reference, before)


def test_a_deleted_latest_resumes_from_best(reference, tmp_path, capsys):
    run_dir = clone(reference["snapshots"] / "finished", tmp_path / "run")
    shutil.rmtree(run_dir / "checkpoints" / "latest")
    before = metrics_rows(run_dir / "metrics.jsonl")
    code, out, err = resume(run_dir, capsys)
    assert code == 0, err
    assert f"Resuming {run_dir} after epoch 2" in out
    assert set_aside(run_dir) == ["metrics.jsonl"]
    assert_matches_reference(run_dir, reference, before)


def test_a_run_saved_before_checksums_resumes_unverified(reference, tmp_path, capsys):
    """Checkpoints without manifests (as saved before them) restore with a warning, also the best one after the
    resumed run has saved newer, verified ones; only a step as new as the newest verified one counts as cut short."""
    run_dir = clone(reference["snapshots"] / "after latest 2", tmp_path / "run")
    for manifest in run_dir.rglob(MANIFEST):
        manifest.unlink()
    before = metrics_rows(run_dir / "metrics.jsonl")
    code, out, err = resume(run_dir, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert {re.search(r"checkpoints/(\w+/\d+) has no", w)[1] for w in warnings} == {"latest/2", "best/2"}
    assert all(w.endswith("restoring it unverified") for w in warnings)
    assert f"Resuming {run_dir} after epoch 2" in out and set_aside(run_dir) == []
    assert_matches_reference(run_dir, reference, before)


def test_nothing_readable_is_one_line_and_touches_nothing(reference, tmp_path, capsys):
    run_dir = clone(reference["snapshots"] / "finished", tmp_path / "run")
    for step in ("latest/3", "latest/2", "best/2"):
        flip_bytes(run_dir / "checkpoints" / step)
    before = (run_dir / "metrics.jsonl").read_bytes()
    code, _, err = resume(run_dir, capsys)
    assert code == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(f"fer-jax train: error: {run_dir}: no readable latest checkpoint")
    assert "latest/3/state/" in line and "fails its checksum" in line and "3 finished epochs" in line
    assert "new --run-dir" in line
    assert (run_dir / "metrics.jsonl").read_bytes() == before and not (run_dir / SET_ASIDE).exists()


def test_evaluate_and_predict_verify_the_best_checkpoint(reference, tmp_path, capsys):
    run_dir = clone(reference["snapshots"] / "finished", tmp_path / "run")
    damaged = flip_bytes(run_dir / "checkpoints" / "best" / "2")
    capsys.readouterr()
    assert evaluate_run(run_dir)["test_accuracy"] == reference["results"]["test_accuracy"]
    [warning] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert f"best/2/{damaged} fails its checksum; using {run_dir}/checkpoints/latest/2" in warning

    flip_bytes(run_dir / "checkpoints" / "latest" / "2")
    with pytest.raises(CheckpointError, match="no readable best checkpoint"):
        restore_weights(run_dir)
    image = tmp_path / "face.png"
    image.write_bytes(b"not read: the checkpoint fails first")
    for command in (["evaluate", str(run_dir)], ["predict", "--checkpoint", str(run_dir), str(image)]):
        assert main(command) == 2
        [line] = capsys.readouterr().err.strip().splitlines()[-1:]
        assert re.fullmatch(
            rf"fer-jax {command[0]}: error: {re.escape(str(run_dir))}: no readable best checkpoint "
            r"\(.*best/2/.* fails its checksum; .*latest/2/.* fails its checksum\); "
            r"its selected weights are lost: .*",
            line,
        ), line


def test_an_exception_inside_an_orbax_commit_then_resume(reference, tmp_path, capsys, monkeypatch):
    config = tiny_config(reference["data"], reference["root"], "raised")
    real_commit = atomicity.on_commit_callback

    async def commit(tmp_dir, **kwargs):
        if Path(tmp_dir.get_final()).parts[-2:] == ("latest", "2"):
            raise Crash
        await real_commit(tmp_dir, **kwargs)

    monkeypatch.setattr(atomicity, "on_commit_callback", commit)
    with pytest.raises(Crash):
        training.train(config)
    monkeypatch.setattr(atomicity, "on_commit_callback", real_commit)
    run_dir = Path(config.run_dir)
    assert (run_dir / "checkpoints" / "latest" / "2.orbax-checkpoint-tmp").is_dir()
    code, out, err = resume(run_dir, capsys)
    assert code == 0, err
    assert f"Resuming {run_dir} after epoch 2" in out
    assert set_aside(run_dir) == ["checkpoints/latest/2.orbax-checkpoint-tmp"]
    assert_matches_reference(run_dir, reference, [])


def test_no_committed_checkpoint_lacks_its_checksums(tmp_path, monkeypatch, capsys):
    """The window a kill -9 once hit, between Orbax's commit and the manifest: the manifest is now written inside
    the temporary folder, so the step folder Orbax commits always has it. Killed before the rename, no step
    folder exists; killed right after it, the step restores verified."""
    state, record = {"w": jnp.arange(4.0)}, {"epoch": 1}
    real_rename, renamed = atomicity.async_path.rename, []

    async def rename(source, target):
        await real_rename(source, target)
        if Path(target).name.isdigit():  # the step folder, not one of its items
            renamed.append((Path(target).name, (Path(target) / MANIFEST).is_file()))
            raise Crash  # killed the instant the step is committed

    def no_manifest(folder, epoch):
        raise Crash  # killed while writing the manifest

    saved = RunCheckpoints(tmp_path)
    monkeypatch.setattr(checkpoints, "write_manifest", no_manifest)
    with pytest.raises(Crash):
        saved.save("latest", 1, state, record)
    assert saved.steps("latest") == [] and (tmp_path / "checkpoints/latest/1.orbax-checkpoint-tmp").is_dir()
    monkeypatch.undo()
    monkeypatch.setattr(atomicity.async_path, "rename", rename)
    with pytest.raises(Crash):
        saved.save("latest", 2, state, record)
    monkeypatch.undo()
    assert renamed == [("2", True)]
    restored, restored_record = RunCheckpoints(tmp_path).restore("latest", state)
    assert restored_record == record and jnp.array_equal(restored["w"], state["w"])
    assert "warning" not in capsys.readouterr().err
    files = json.loads((tmp_path / "checkpoints/latest/2" / MANIFEST).read_text())["files"]
    on_disk = {
        p.relative_to(tmp_path / "checkpoints/latest/2").as_posix()
        for p in (tmp_path / "checkpoints/latest/2").rglob("*")
        if p.is_file()
    }
    assert on_disk - set(files) == {MANIFEST, *checkpoints.ORBAX_COMMIT_FILES}


# The PyTorch baseline's checkpoints: the same rules on single files, tried on tiny objects (no training).


def torch_latest(epoch: int) -> dict:
    return {
        "model": {"w": torch.full((3,), float(epoch))},
        "optimizer": {"state": {}, "param_groups": []},
        "record": {"epoch": epoch, "best_epoch": epoch},
    }


def torch_run(root: Path, epochs: int) -> TorchCheckpoints:
    """A baseline run folder after `epochs` epochs that each improved: best.pt and two latest."""
    saved = TorchCheckpoints(root)
    for epoch in range(1, epochs + 1):
        saved.save("best", epoch, torch_latest(epoch)["model"])
        saved.save("latest", epoch, torch_latest(epoch))
    return saved


def crash_at_rename(monkeypatch, number: int) -> None:
    """Make the `number`-th rename from now on (os.replace: each file write, manifest write and move) the crash."""
    real, calls = os.replace, []

    def replace(*args):
        calls.append(args)
        if len(calls) == number:
            raise Crash
        real(*args)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("which", ["best", "latest"])
@pytest.mark.parametrize("rename", [1, 2, 3, 4, 5])
def test_torch_saves_survive_a_crash_at_every_rename(which, rename, tmp_path, monkeypatch, capsys):
    """Killed at any rename of a save of epoch 3 (after 2 finished epochs), the run resumes from epoch 2 (the save
    had not committed) or 3 (it had: its manifest entry was written, the 2nd rename)."""
    run = torch_run(tmp_path, 2)
    crash_at_rename(monkeypatch, rename)
    with pytest.raises(Crash):
        run.save(which, 3, torch_latest(3)["model"] if which == "best" else torch_latest(3))
        raise Crash  # the save finished before that rename: the crash comes right after it
    monkeypatch.undo()
    committed = rename > 2 and which == "latest"
    resumed = TorchCheckpoints(tmp_path).resume(torch.device("cpu"), finished_epochs=2)
    assert resumed["record"]["epoch"] == (3 if committed else 2)
    assert torch.equal(resumed["model"]["w"], torch_latest(resumed["record"]["epoch"])["model"]["w"])
    warnings = capsys.readouterr().err.strip().splitlines()
    assert all(f"{which}.next.pt matches no checksum" in line for line in warnings)  # the one save cut short
    best = TorchCheckpoints(tmp_path).restore_best(2, torch.device("cpu"))
    assert torch.equal(best["w"], torch_latest(2)["model"]["w"])  # best.pt, or after a crash in a best save, latest 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_torch_damaged_latest_falls_back_to_the_previous_one(damage, tmp_path, capsys):
    torch_run(tmp_path, 3)
    latest = tmp_path / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    if damage == "flip":
        latest.write_bytes(data[:1000] + bytes(b ^ 0xFF for b in data[1000:5096]) + data[5096:])
    elif damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    else:
        latest.unlink()
    resumed = TorchCheckpoints(tmp_path).resume(torch.device("cpu"), finished_epochs=3)
    assert resumed["record"]["epoch"] == 2
    out, err = capsys.readouterr()
    if damage != "delete":
        [warning] = err.strip().splitlines()
        assert warning == (
            f"warning: {tmp_path}/checkpoints/latest.pt matches no checksum in {MANIFEST}: damaged, "
            f"or its save was cut short; using {tmp_path}/checkpoints/latest.previous.pt"
        )
        assert f"Set aside {latest}" in out
    assert f"Set aside {tmp_path}/checkpoints/best.pt" in out  # epoch 3: the run saves it again


def test_torch_best_falls_back_to_latest_and_nothing_readable_is_one_line(tmp_path, capsys):
    torch_run(tmp_path, 3)
    checkpoints_dir = tmp_path / "checkpoints"
    (checkpoints_dir / "best.pt").write_bytes(b"damaged")
    best = TorchCheckpoints(tmp_path).restore_best(3, torch.device("cpu"))
    assert torch.equal(best["w"], torch_latest(3)["model"]["w"])
    assert "best.pt matches no checksum" in capsys.readouterr().err
    for name in ("latest.pt", "latest.previous.pt"):
        (checkpoints_dir / name).write_bytes(b"damaged")
    with pytest.raises(
        CheckpointError,
        match=r"no readable latest checkpoint \(.*latest.pt matches no checksum.*"
        r"latest.previous.pt matches no checksum.*3 finished epochs\); train",
    ):
        TorchCheckpoints(tmp_path).resume(torch.device("cpu"), finished_epochs=3)
    with pytest.raises(CheckpointError, match="no readable best checkpoint of epoch 3"):
        TorchCheckpoints(tmp_path).restore_best(3, torch.device("cpu"))
    (checkpoints_dir / MANIFEST).unlink()  # a run saved before manifests: used unverified, with a warning each
    with pytest.raises(CheckpointError, match="latest.pt is unreadable"):
        TorchCheckpoints(tmp_path).resume(torch.device("cpu"), finished_epochs=3)
