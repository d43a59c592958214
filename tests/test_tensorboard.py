"""TensorBoard event files of tiny JAX and PyTorch runs: they agree with metrics.jsonl, hold no epoch twice after a
resume, carry the hparams and images, a profile leaves traces the readers recognise, and TensorBoard serves them."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import jax.profiler
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from fer_jax.baseline import trainer as torch_baseline
from fer_jax.cli import main
from fer_jax.config import Config
from fer_jax.files import read_jsonl
from fer_jax.train import trainer as training
from fer_jax.train.checkpoints import SET_ASIDE
from fer_jax.train.tensorboard_log import (
    CONFUSION,
    CURVES,
    IMAGES_PER_S,
    PROFILE_DIR,
    SCALARS,
    TEST_ACCURACY,
    event_files,
)
from tests.fixtures import metrics_without_seconds

pytestmark = pytest.mark.slow  # every test here runs training end to end

SERVER_TIMEOUT_S = 90


def tiny_config(tiny_zip: Path, root: Path, name: str, **overrides: object) -> Config:
    config = Config()
    config.data.source = str(tiny_zip)
    config.data.cache_dir = str(root / "cache")
    config.run_dir = str(root / "runs" / name)
    config.apply_overrides(["train.batch_size=8", "train.eval_batch_size=16", "train.epochs=2"])
    config.apply_overrides([f"{key}={value}" for key, value in overrides.items()])
    return config


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tensorboard")


@pytest.fixture(scope="module")
def jax_run(tiny_zip: Path, root: Path) -> Path:
    """A tiny JAX run that also profiles 2 steps."""
    config = tiny_config(tiny_zip, root, "jax", **{"train.profile_steps": 2})
    training.train(config)
    return Path(config.run_dir)


@pytest.fixture(scope="module")
def torch_run(tiny_zip: Path, root: Path) -> Path:
    config = tiny_config(tiny_zip, root, "pytorch")
    torch_baseline.train_torch(config)
    return Path(config.run_dir)


def float32(value: float) -> float:
    """What an event file's float32 `simple_value` holds for `value`."""
    return struct.unpack("f", struct.pack("f", value))[0]


def logged_scalars(run_dir: Path) -> list[tuple[str, int, float]]:
    """Every (tag, step, value) of a scalar in every event file of `run_dir`, read raw (no purging, no dedup)."""
    found = []
    for path in event_files(run_dir):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found.append((value.tag, event.step, value.simple_value))
    return found


def assert_agrees_with_metrics(run_dir: Path) -> None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    scalars = [entry for entry in logged_scalars(run_dir) if entry[0] != TEST_ACCURACY]
    assert not [key for key, count in Counter((tag, step) for tag, step, _ in scalars).items() if count > 1]
    expected = {(tag, row["epoch"], float32(row[key])) for row in rows for tag, key in SCALARS.items()}
    logged = {entry for entry in scalars if entry[0] != IMAGES_PER_S}
    assert logged == expected
    assert {step for tag, step, _ in scalars if tag == IMAGES_PER_S} == {row["epoch"] for row in rows}


@pytest.mark.parametrize("framework", ["jax", "pytorch"])
def test_event_files_agree_with_metrics_jsonl(framework: str, request: pytest.FixtureRequest) -> None:
    run_dir = request.getfixturevalue(f"{'jax' if framework == 'jax' else 'torch'}_run")
    assert len(event_files(run_dir)) == 1
    assert_agrees_with_metrics(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train_images = results["train_images"] // 8 * 8
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    assert [event.value for event in accumulator.Scalars(IMAGES_PER_S)] == pytest.approx(
        [train_images / row["seconds"] for row in rows], rel=1e-6
    )
    (test,) = accumulator.Scalars(TEST_ACCURACY)
    assert (test.step, test.value) == (results["best_epoch"], float32(results["test_accuracy"]))
    assert [image.step for image in accumulator.Images(CURVES)] == [row["epoch"] for row in rows]
    (confusion,) = accumulator.Images(CONFUSION)
    assert confusion.encoded_image_string == (run_dir / "confusion_matrix.png").read_bytes()
    content = accumulator.PluginTagToContent("hparams")
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["framework"].string_value == framework
    assert start.hparams["optim.learning_rate"].number_value == Config().optim.learning_rate
    assert start.hparams["model.name"].string_value == "seed_cnn"
    assert hparams_metadata.SESSION_END_INFO_TAG in content


def test_jax_profile_is_an_xplane_jax_reads(jax_run: Path) -> None:
    (xplane,) = (jax_run / PROFILE_DIR).glob("*/*.xplane.pb")
    profile = jax.profiler.ProfileData.from_file(str(xplane))
    events = {event.name for plane in profile.planes for line in plane.lines for event in line.events}
    assert any("train_step" in name for name in events)
    assert list(xplane.parent.glob("perfetto_trace.json.gz"))


def test_a_jax_profile_does_not_change_the_run(tiny_zip: Path, root: Path, jax_run: Path) -> None:
    config = tiny_config(tiny_zip, root, "jax-unprofiled")
    training.train(config)
    assert metrics_without_seconds(jax_run) == metrics_without_seconds(Path(config.run_dir))


def test_resume_after_a_crash_holds_each_epoch_once_and_profiles_without_changing_the_run(
    tiny_zip: Path, root: Path, torch_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(tiny_zip, root, "pytorch-resumed")
    real_epoch = torch_baseline.torch_train_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if args[6] == 2:
            raise KeyboardInterrupt("killed in epoch 2")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(torch_baseline, "torch_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        torch_baseline.train_torch(config)
    run_dir = Path(config.run_dir)
    assert {step for _, step, _ in logged_scalars(run_dir)} == {1}  # readable, epoch 1 flushed
    monkeypatch.setattr(torch_baseline, "torch_train_epoch", real_epoch)
    (first_events,) = event_files(run_dir)
    first_events_bytes = first_events.read_bytes()
    first_start = json.loads((run_dir / "environment.json").read_text())

    config.train.profile_steps = 2
    torch_baseline.train_torch(config, resume=True)
    assert_agrees_with_metrics(run_dir)
    assert [row["epoch"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]

    # Nothing lost or misattributed: the first start's event file is set aside whole, environment.json keeps the
    # first start and appends the resume, and the results name the commit of each.
    (kept,) = (run_dir / SET_ASIDE).glob(f"*/{first_events.name}")
    assert kept.read_bytes() == first_events_bytes
    environment = json.loads((run_dir / "environment.json").read_text())
    assert {key: environment[key] for key in first_start} == first_start
    assert [resume["resumed_after"] for resume in environment["resumes"]] == [1]
    results = json.loads((run_dir / "results.json").read_text())
    resumed_at = [environment["resumes"][0]["git_commit"]]
    assert (results["git_commit"], results["resumed_at"]) == (first_start["git_commit"], resumed_at)

    assert metrics_without_seconds(run_dir) == metrics_without_seconds(torch_run)
    (trace,) = (run_dir / PROFILE_DIR).glob("*/*.pt.trace.json.gz")
    names = {event.get("name") for event in json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]}
    assert "aten::convolution_backward" in names


def test_tensorboard_serves_the_scalars_of_both_frameworks(jax_run: Path, torch_run: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(jax_run.parent)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--load_fast", "false", "--reload_interval", "1"]
    log = tmp_path / "tensorboard.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        tags: dict = {}
        while time.monotonic() < deadline and not {"jax", "pytorch"} <= set(tags):
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as reply:
                    tags = json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
                continue
            time.sleep(0.5)
        assert {"jax", "pytorch"} <= set(tags), f"TensorBoard listed {sorted(tags)}: {log.read_text()[-2000:]}"
        for run in ("jax", "pytorch"):
            assert set(SCALARS) | {IMAGES_PER_S, TEST_ACCURACY} <= set(tags[run])
    finally:
        server.kill()
        server.wait(timeout=30)


def test_profile_flag_is_explained_and_checked(
    tiny_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--profile STEPS" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(tiny_zip), "--profile", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--profile: train.profile_steps=-1: expected an integer >= 0 (0: off)" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()
