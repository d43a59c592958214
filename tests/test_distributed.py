"""Multi-process training on JAX's distributed runtime, on this machine: two `fer-jax train` processes on
127.0.0.1 (Gloo CPU collectives, one CPU device each) against one process with two devices.

One module fixture runs, side by side: the reference (one process, two devices, two epochs); the
same run as two processes, one of which is killed (kill -9) once the first epoch is saved; and a
process waiting for a peer that never comes. The two-process run must match the reference after its
first epoch's three steps, write one run folder, fail in the surviving process with one clear line
within its timeout, and resume in one process (another process count) to the reference's end.
The same fixture compares data.pipeline=device the same way (no kill), with three more processes
started once the kill is done, so they run while the survivor waits out its timeout. With them start
the same two-process run again, where process 0 (the host of JAX's coordination service) is killed,
and a pair whose loss is not finite, so that both processes fail with their own TrainingError (process 1
once hid it behind an AttributeError). Everything started here is killed in a `finally`. The processes
share a JAX compilation cache, so the resumed run reuses the reference's compiled steps, and are forked
from one that has imported the package (tests/forked.py): each is a `fer-jax` process with its own JAX
runtime and PID, started without 8 CPU-seconds of imports.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fer_jax.config import ConfigError, ProcessConfig
from fer_jax.files import read_jsonl
from fer_jax.train import distributed
from tests import forked
from tests.fixtures import tiny_run_overrides

pytestmark = pytest.mark.slow  # every test here runs training end to end

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 2
"""Two: the reference keeps latest/1 (the epoch compared) and latest/2."""
TIMEOUT = 20
"""train.distributed_timeout of the two-process run (seconds)."""
LONELY_TIMEOUT = 5
"""train.distributed_timeout of the process whose peer never comes."""


def wait_for_a_missing_peer(address: str, timeout: int) -> None:
    """Process 1 of 2 joining `address`, where nobody listens (the lonely process)."""
    from fer_jax.config import Config, ProcessConfig

    config = Config()
    config.train.distributed, config.train.distributed_timeout = True, timeout
    distributed.start(config, ProcessConfig(address, 2, 1))


WAIT = 240
"""The longest any process here may run."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(data: Path, cache: Path, *flags: str) -> list[str]:
    """The arguments of `fer-jax` for a tiny run."""
    return ["train", "--data", str(data), "--epochs", str(EPOCHS), *tiny_run_overrides(cache), *flags]


def environment(devices: int, jax_cache: Path) -> dict[str, str]:
    """This session's environment (PYTHONPATH: this checkout's fer_jax), on `devices` CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the later processes load the small programs too
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def start(command: list[str], cwd: Path, devices: int, log: str, target=forked.fer_jax) -> forked.Process:
    """`fer-jax COMMAND` (or `target(*command)`) in `cwd` on `devices` CPU devices, its output in `cwd/log`."""
    cwd.mkdir(parents=True, exist_ok=True)
    return forked.start(target, tuple(command), cwd, environment(devices, cwd.parent / "jax-cache"), cwd / log)


def process_flags(port: int, process_id: int, processes: int = 2) -> list[str]:
    return [
        "--distributed",
        "--coordinator-address",
        f"127.0.0.1:{port}",
        "--num-processes",
        str(processes),
        "--process-id",
        str(process_id),
        "--set",
        f"train.distributed_timeout={TIMEOUT}",
    ]


def wait_for(condition, what: str, processes: list[forked.Process]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in processes):
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def weights(step: Path) -> list[np.ndarray]:
    """The trained weights of a checkpoint step, as NumPy arrays, in a fixed order."""
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(step / "state").item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return jax.tree.leaves(checkpointer.restore(step / "state", restore_args=restore_args)["params"])


def largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def runs(tiny_zip, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("distributed")
    cache = root / "cache"
    started: list[forked.Process] = []
    began, cpu_before = time.monotonic(), children_cpu_seconds()
    with forked.server(environment(1, root / "jax-cache")):
        try:
            reference = start(train_command(tiny_zip, cache, "--run-dir", "run"), root / "reference", 2, "log")
            port = free_port()
            pair = [
                start(train_command(tiny_zip, cache, *process_flags(port, i)), root / "pair", 1, f"log{i}")
                for i in (0, 1)
            ]
            lonely_address = f"127.0.0.1:{free_port()}"
            lonely = start([lonely_address, LONELY_TIMEOUT], root / "lonely", 1, "log", wait_for_a_missing_peer)
            started += [reference, *pair, lonely]
            runs_folder = root / "pair" / "runs" / "seed_cnn"
            wait_for(lambda: first_epoch_saved(runs_folder), "the two-process run's first epoch", pair)
            pair[1].kill()
            killed = time.monotonic()
            device_runs = start_device_pipeline_runs(tiny_zip, cache, root)
            started += device_runs
            port = free_port()
            pair_without_0 = [
                start(train_command(tiny_zip, cache, *process_flags(port, i)), root / "pair-without-0", 1, f"log{i}")
                for i in (0, 1)
            ]
            started += pair_without_0
            port = free_port()
            overflowing = ["--lr", "1e30", "--epochs", "1", "--run-dir", "run"]  # the weights overflow at once
            non_finite = [
                start(
                    train_command(tiny_zip, cache, *overflowing, *process_flags(port, i)),
                    root / "non-finite",
                    1,
                    f"log{i}",
                )
                for i in (0, 1)
            ]
            started += non_finite
            (run_dir,) = runs_folder.iterdir()
            first_epoch = read_jsonl(run_dir / "metrics.jsonl")[0]
            first_weights = weights(run_dir / "checkpoints" / "latest" / "1")
            survivor_code = exit_code(pair[0])
            survivor_seconds = time.monotonic() - killed
            survivors = {1: (survivor_code, survivor_seconds, (root / "pair" / "log0").read_text())}
            resume = ["train", "--resume", str(run_dir), "--no-distributed"]
            resumed = start(resume, root / "pair", 2, "../resumed-log")  # the pair's folder holds its runs alone
            started.append(resumed)
            survivors[0] = kill_after_the_first_epoch(pair_without_0, 0, root / "pair-without-0")
            lonely_code = exit_code(lonely)
            assert exit_code(reference) == 0, (root / "reference" / "log").read_text()[-3000:]
            runs = {
                "root": root,
                "run_dir": run_dir,
                "first_epoch": first_epoch,
                "first_weights": first_weights,
                "survivors": survivors,
                "non_finite": [
                    (exit_code(p), (root / "non-finite" / f"log{i}").read_text()) for i, p in enumerate(non_finite)
                ],
                "lonely": (lonely_code, last_line(root / "lonely" / "log")),
                "resumed": (exit_code(resumed), (root / "resumed-log").read_text()[-3000:]),
                "device_codes": [exit_code(process) for process in device_runs],
                "seconds": time.monotonic() - began,
            }
        finally:
            for process in started:
                if process.is_alive():
                    process.kill()
                    process.join()
    runs["cpu_seconds"] = children_cpu_seconds() - cpu_before  # the forkserver's and so its children's
    return runs


def kill_after_the_first_epoch(pair: list[forked.Process], victim: int, folder: Path) -> tuple[int | None, float, str]:
    """Kill process `victim` of `pair` (running in `folder`) once its first epoch is saved; the other's exit code,
    seconds from the kill to its exit, and its output."""
    runs_folder = folder / "runs" / "seed_cnn"
    wait_for(lambda: first_epoch_saved(runs_folder), f"the first epoch of {folder.name}", pair)
    pair[victim].kill()
    killed = time.monotonic()
    survivor = 1 - victim
    code = exit_code(pair[survivor])
    return code, time.monotonic() - killed, (folder / f"log{survivor}").read_text()


def first_epoch_saved(runs_folder: Path) -> bool:
    """Whether `runs_folder` holds one run folder, with a finished epoch in its metrics."""
    folders = list(runs_folder.iterdir()) if runs_folder.is_dir() else []
    return len(folders) == 1 and len(read_jsonl_or_empty(folders[0] / "metrics.jsonl")) >= 1


def error_lines(log: str) -> list[str]:
    """The lines of `log` that report an error (each process's one line)."""
    return [line for line in log.splitlines() if "fer-jax train: error:" in line]


def exit_code(process: forked.Process) -> int | None:
    """`process`'s exit code once it has ended (None if it runs past WAIT seconds)."""
    process.join(WAIT)
    return process.exitcode


def start_device_pipeline_runs(data: Path, cache: Path, root: Path) -> list[forked.Process]:
    """data.pipeline=device (the split on every device, each process handing over its slice of the indices), one
    epoch: one process with two devices in root/device-one, two processes in root/device-two (beside the others,
    sharing their compilation cache)."""
    flags = ["--epochs", "1", "--set", "data.pipeline=device", "--set", "train.steps_per_dispatch=3"]
    port = free_port()
    one = start(train_command(data, cache, *flags, "--run-dir", "run"), root / "device-one", 2, "log")
    commands = [train_command(data, cache, *flags, "--run-dir", "run", *process_flags(port, i)) for i in (0, 1)]
    two = [start(command, root / "device-two", 1, f"log{i}") for i, command in enumerate(commands)]
    return [one, *two]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_jsonl_or_empty(path: Path) -> list[dict]:
    try:
        return read_jsonl(path)
    except (OSError, ValueError):
        return []


def test_two_processes_train_like_one_process_with_two_devices(runs):
    reference = runs["root"] / "reference" / "run"
    expected = read_jsonl(reference / "metrics.jsonl")[0]
    for key in ("train_loss", "val_loss"):
        assert runs["first_epoch"][key] == pytest.approx(expected[key], abs=1e-4), key
    assert runs["first_epoch"]["train_accuracy"] == expected["train_accuracy"]
    weight_difference = largest_difference(runs["first_weights"], weights(reference / "checkpoints" / "latest" / "1"))
    assert weight_difference < 1e-5
    differences = {key: runs["first_epoch"][key] - expected[key] for key in ("train_loss", "val_loss")}
    print(f"\ntwo processes vs one, epoch 1: {json.dumps(differences)}, largest weight difference {weight_difference}")
    print(
        f"processes: {runs['seconds']:.1f} s wall, {runs['cpu_seconds']:.1f} s CPU; the survivor stopped "
        f"{runs['survivors'][1][1]:.1f} s after process 1 was killed, {runs['survivors'][0][1]:.1f} s after process 0"
    )


def test_process_zero_alone_writes_one_run_folder(runs):
    pair = runs["root"] / "pair"
    assert [p.name for p in (pair / "runs" / "seed_cnn").iterdir()] == [runs["run_dir"].name]
    assert sorted(p.name for p in pair.iterdir()) == ["log0", "log1", "runs"]
    for step in ("best/1", "latest/1"):  # saved by the two processes: process 0's manifest lists both one's shards
        assert "state/ocdbt.process_1/" in (runs["run_dir"] / "checkpoints" / step / "checksums.json").read_text()


@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_peer_is_one_clear_error_within_the_timeout(runs, killed):
    """The survivor ends within its timeout with one line and no traceback. When process 1 dies, process 0 says
    so in its own line. When process 0 dies, JAX's coordination service (which it hosted) is gone and JAX ends
    process 1 at once with its own fatal log line ("... another task died ..."), unless this process's line, from
    its failed collective, came first: the two race, and JAX offers no hook to replace its line."""
    code, seconds, log = runs["survivors"][killed]
    survivor = 1 - killed
    assert code != 0 and seconds < 2 * TIMEOUT + 15, (code, seconds, log[-3000:])
    assert "Traceback" not in log and "AttributeError" not in log, log[-3000:]
    ours = error_lines(log)
    assert len(ours) <= 1, ours
    if killed == 1 or ours:
        assert ours and ours[0].startswith(f"fer-jax train: error: process {survivor} of 2 stopped: "), log[-3000:]
    else:
        assert "another task died" in log, log[-3000:]  # JAX's fatal log, followed by its C++ stack trace


def test_a_missing_peer_is_one_line_after_its_timeout(runs):
    code, line = runs["lonely"]
    assert code == 2 and line.startswith(f"fer-jax train: error: process 1 of 2 waited {LONELY_TIMEOUT}s at 127.0."), (
        line
    )


def test_each_failing_process_reports_its_own_error(runs):
    """Both processes of the run whose loss is not finite stop with their own TrainingError, each in one line
    naming itself: process 1 (which writes no TensorBoard file) too, and before process 0's exit ends it."""
    for process, (code, log) in enumerate(runs["non_finite"]):
        assert code == 2, log[-3000:]
        assert "Traceback" not in log and "AttributeError" not in log, log[-3000:]
        assert error_lines(log) == [
            f"fer-jax train: error: process {process} of 2 stopped: TrainingError: run: no epoch finished with a "
            "finite loss, so there is no checkpoint to evaluate"
        ], log[-3000:]


def test_a_killed_run_resumes_with_another_process_count(runs):
    code, log = runs["resumed"]
    assert code == 0, log
    reference = runs["root"] / "reference" / "run"
    rows, expected = read_jsonl(runs["run_dir"] / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
    for row, want in zip(rows, expected, strict=True):
        assert row["train_loss"] == pytest.approx(want["train_loss"], abs=1e-4)
        assert row["val_accuracy"] == want["val_accuracy"]
    final = f"checkpoints/latest/{EPOCHS}"
    assert largest_difference(weights(runs["run_dir"] / final), weights(reference / final)) < 1e-5
    results = json.loads((runs["run_dir"] / "results.json").read_text())
    assert results["test_accuracy"] == json.loads((reference / "results.json").read_text())["test_accuracy"]


def test_the_device_pipeline_matches_too(runs):
    one_dir, two_dir = runs["root"] / "device-one", runs["root"] / "device-two"
    assert runs["device_codes"] == [0, 0, 0], [(two_dir / f"log{i}").read_text()[-1500:] for i in (0, 1)]
    one, two = read_jsonl(one_dir / "run/metrics.jsonl")[0], read_jsonl(two_dir / "run/metrics.jsonl")[0]
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    step = "run/checkpoints/latest/1"
    assert largest_difference(weights(two_dir / step), weights(one_dir / step)) < 1e-5


def test_bad_process_settings_are_one_line_errors(monkeypatch):
    for address in ("127.0.0.1", "127.0.0.1:0", ":1234", "127.0.0.1:http"):
        with pytest.raises(ConfigError, match="not host:port"):
            distributed.resolve(ProcessConfig(address, 2, 0))
    with pytest.raises(ConfigError, match="cannot resolve"):
        distributed.resolve(ProcessConfig("no-such-host.invalid:1234", 2, 0))
    with pytest.raises(ConfigError, match="process id 2 is not in 0..1"):
        distributed.resolve(ProcessConfig("127.0.0.1:1234", 2, 2))
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.resolve(ProcessConfig()) == ProcessConfig("127.0.0.1:1234", 2, 1)
    assert distributed.resolve(ProcessConfig(process_id=0)) == ProcessConfig("127.0.0.1:1234", 2, 0)
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(ConfigError, match="JAX_PROCESS_ID must be a whole number"):
        distributed.resolve(ProcessConfig())


def test_process_flags_without_distributed_are_refused(capsys, tmp_path):
    from fer_jax.cli import main

    assert main(["train", "--run-dir", str(tmp_path / "run"), "--process-id", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "fer-jax train: error: --coordinator-address, --num-processes and --process-id need --distributed"
    )
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--distributed", "--coordinator-address", "foo"]) == 2
    assert "coordinator address 'foo' is not host:port" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
