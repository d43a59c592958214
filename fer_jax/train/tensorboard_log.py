"""TensorBoard event files of a run (written by tensorboardX, no TensorFlow) and profiler traces of its train steps.

Every run, JAX or PyTorch, writes into its own folder: per epoch the scalars of its
metrics.jsonl row (`SCALARS`) and the train images/s, the curves as an image; at the end
the PrivateTest confusion matrix and accuracy; and the run's config as hparams (plus
'framework'), so `tensorboard --logdir runs` shows and filters every run with no extra step.

metrics.jsonl stays the source of truth. The event files are a view of it: each start of a
run (new or resumed) sets the folder's older event files aside (under `set-aside/`, as every
other file a resume replaces; never deleted) and writes the checkpoint's history (what
metrics.jsonl is rewritten from) into a new one, so no epoch is there twice in the run's view,
and each epoch is flushed as soon as metrics.jsonl holds it, so a killed run leaves
readable event files. Wall times of epochs written again on resume are those of the resume.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

import jax
import torch
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import hparams

from fer_jax.config import Config, ConfigError, known_keys
from fer_jax.train.checkpoints import move_aside, set_aside_stamp

SCALARS = {
    "loss/train": "train_loss",
    "loss/PublicTest": "val_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/PublicTest": "val_accuracy",
    "learning_rate": "learning_rate",
    "seconds/epoch": "seconds",
}
"""Scalar tag -> the metrics.jsonl key it holds, at step = epoch."""
IMAGES_PER_S = "images_per_s/train"
"""Training images of an epoch / its seconds (which include its PublicTest pass, as in `fer-jax compare`)."""
CURVES = "curves"
CONFUSION = "confusion_matrix/PrivateTest"
TEST_ACCURACY = "accuracy/PrivateTest"
"""The best checkpoint's PrivateTest accuracy (results.json `test_accuracy`), at step = its epoch."""
PROFILE_DIR = Path("plugins") / "profile"
"""Where traces go in a run folder: where jax.profiler puts them and TensorBoard's profile plugin looks."""

_serial = itertools.count()


def event_files(run_dir: str | os.PathLike) -> list[Path]:
    """The TensorBoard event files directly in `run_dir`."""
    return sorted(Path(run_dir).glob("events.out.tfevents.*"))


class RunBoard:
    """A run's TensorBoard event file: open it with `start`, then `epoch` per epoch and `finish` (or `close`).

    Written synchronously (tensorboardX's `EventsWriter`, not its `SummaryWriter`, whose flush does
    not wait for the events queued to its writer thread), so after `epoch` the epoch is on disk.
    `seconds` adds up the wall time of these calls, to check that logging stays cheap.
    """

    def __init__(self, config: Config, framework: str, images_per_epoch: int) -> None:
        self.run_dir = Path(config.run_dir)
        self.images_per_epoch = images_per_epoch
        self.seconds = 0.0
        self.epoch_seconds = 0.0
        stamp = set_aside_stamp()
        for path in event_files(self.run_dir):
            move_aside(path, self.run_dir, "a new start of the run writes its history into a new event file", stamp)
        self.writer = EventsWriter(str(self.run_dir / "events"), f".{os.getpid()}.{next(_serial)}")
        _, start_info, self._end_info = hparams(run_hparams(config, framework), {})
        self._write(start_info, 0)

    @classmethod
    def start(cls, config: Config, framework: str, history: list[dict[str, Any]], images_per_epoch: int) -> RunBoard:
        """A new event file for the run in `config.run_dir` holding `history` (the epochs metrics.jsonl has)."""
        started = time.perf_counter()
        board = cls(config, framework, images_per_epoch)
        for row in history:
            board._scalars(row)
        if history:
            board._png(CURVES, board.run_dir / "curves.png", history[-1]["epoch"])
        board.writer.flush()
        board.seconds += time.perf_counter() - started
        return board

    def epoch(self, row: dict[str, Any]) -> None:
        """Log an epoch's metrics.jsonl row and curves.png (already written), then flush to disk."""
        started = time.perf_counter()
        self._scalars(row)
        self._png(CURVES, self.run_dir / "curves.png", row["epoch"])
        self.writer.flush()
        self.seconds += time.perf_counter() - started

    def finish(self, results: dict[str, Any]) -> None:
        """Log the results (confusion_matrix.png, PrivateTest accuracy), end the hparams session and close."""
        started = time.perf_counter()
        self._png(CONFUSION, self.run_dir / "confusion_matrix.png", results["best_epoch"])
        self._write(_scalar(TEST_ACCURACY, results["test_accuracy"]), results["best_epoch"])
        self._write(self._end_info, results["best_epoch"])
        self.seconds += time.perf_counter() - started
        self.close()
        share = f" ({self.seconds / self.epoch_seconds:.2%} of the epochs' time)" if self.epoch_seconds else ""
        print(f"TensorBoard: {self.run_dir} ({self.seconds:.3f} s in its writer{share})")

    def close(self) -> None:
        """Flush and close the event file (also after a failure: what was logged stays readable)."""
        started = time.perf_counter()
        self.writer.close()
        self.seconds += time.perf_counter() - started

    def _write(self, summary: Summary, step: int) -> None:
        self.writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _scalars(self, row: dict[str, Any]) -> None:
        for tag, key in SCALARS.items():
            self._write(_scalar(tag, row[key]), row["epoch"])
        self._write(_scalar(IMAGES_PER_S, self.images_per_epoch / row["seconds"]), row["epoch"])
        self.epoch_seconds += row["seconds"]

    def _png(self, tag: str, path: Path, step: int) -> None:
        """Log a PNG file as it is (no decoding, no re-rendering); nothing when there is no such file."""
        if not path.is_file():
            return
        png = path.read_bytes()
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        self._write(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _scalar(tag: str, value: float) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])


def run_hparams(config: Config, framework: str) -> dict[str, Any]:
    """The hparams a run is filtered by in TensorBoard: 'framework' and every config key (dotted)."""
    values: dict[str, Any] = {"framework": framework}
    for key in known_keys():
        value: Any = config
        for name in key.split("."):
            value = getattr(value, name)
        values[key] = value
    return values


class StepTrace:
    """Traces `steps` train steps right after the run's first one (which compiles), into RUN_DIR/plugins/profile/.

    JAX: `jax.profiler` (an .xplane.pb for TensorBoard's profile plugin / XProf, and a Perfetto
    trace.json.gz). PyTorch: `torch.profiler`, a Chrome trace (<host>.pt.trace.json.gz) that
    Perfetto opens. Call `step` after every train step (with how many steps the call ran: a
    dispatch of data.pipeline='device' runs several) and `close` when training ends. Tracing
    only watches: the run computes the same numbers.
    """

    def __init__(self, run_dir: str | os.PathLike, steps: int, framework: str) -> None:
        if steps < 0:
            raise ConfigError(f"train.profile_steps must be 0 (off) or more, got {steps}")
        self.run_dir = Path(run_dir)
        self.steps = steps
        self.framework = framework
        self.calls = 0
        self.traced = 0
        self.running = False
        self._torch_profile: Any = None
        self.path: Path | None = None

    def step(self, result: Any = None, steps: int = 1) -> None:
        """After a train step: start tracing after the first call, stop once `steps` steps are traced."""
        if self.steps <= 0:
            return
        self.calls += 1
        if self.calls == 1:
            self._start()
        elif self.running:
            self.traced += steps
            if self.traced >= self.steps:
                self._stop(result)

    def close(self, result: Any = None) -> None:
        """Stop a trace still running (the run ended within its window)."""
        if self.running:
            self._stop(result)

    def _start(self) -> None:
        if self.framework == "jax":
            jax.profiler.start_trace(str(self.run_dir), create_perfetto_trace=True)
        else:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._torch_profile = torch.profiler.profile(activities=activities)
            self._torch_profile.start()
        self.running = True

    def _stop(self, result: Any) -> None:
        self.running = False
        if self.framework == "jax":
            jax.block_until_ready(result)
            jax.profiler.stop_trace()
            self.path = max((self.run_dir / PROFILE_DIR).glob("*/*.xplane.pb"), key=os.path.getmtime)
        else:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._torch_profile.stop()
            folder = self.run_dir / PROFILE_DIR / time.strftime("%Y_%m_%d_%H_%M_%S")
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / f"{socket.gethostname()}.pt.trace.json.gz"
            self._torch_profile.export_chrome_trace(str(self.path))
        print(f"Profiled {self.traced} train steps after the first: {self.path}")
