"""Multi-process runs on JAX's own distributed runtime (`train.distributed`; docs/distributed.md).

`process_group` joins the run with `jax.distributed.initialize()`: which process this is comes
from `ProcessConfig` (flags), else from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and
$JAX_PROCESS_ID, else from JAX's cluster auto-detection (SLURM, Cloud TPU, ...). The mesh then
spans every process's devices (`fer_jax.train.parallel`), each process hands its devices only its
rows of each batch, and process 0 alone writes the run folder (`is_writer`).

Every wait is bounded by `train.distributed_timeout`: a process that cannot join in time, or whose
peers are gone, fails with one line (`DistributedError`) instead of hanging. A process that fails
prints one line that names it and gives its own error ("process 1 of 2 stopped: TrainingError: ..."),
not one its cleanup met afterwards (`close_after_failure`). A survivor says in that line that a peer
is gone when a collective fails. JAX's coordination service can be first: it ends every process
whose peer stopped sending heartbeats for the timeout, and at once every process when process 0
(which hosts it) is gone, with its own fatal log ("... This most likely indicates that another
task died ...", then a C++ stack trace; no Python traceback). JAX offers no hook to replace it
(jaxlib 0.10's client callback cannot be handed its status: std::bad_cast). So that processes
failing together each get their line out first, process 0 waits for them (`REPORT_GRACE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from fer_jax.config import Config, ConfigError, ProcessConfig
from fer_jax.errors import DistributedError

ENVIRONMENT = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
"""The environment variables a `ProcessConfig` field falls back to (JAX itself reads the first)."""
JAX_GRACE_SECONDS = 15
"""JAX's own initialization timeout is this much longer than ours, so that ours, with its one-line error,
fires first (JAX's ends the process with a C++ stack trace)."""
MAX_STRING_BYTES = 4096
"""The longest string `shared_string` sends (a run folder's path)."""
_abandoned = False
"""Whether `process_group` gave up on a multi-process run (see `exit_if_abandoned`)."""
REPORT_GRACE_SECONDS = 5
"""The longest process 0, failing, waits for the other processes to report their own errors before it leaves
(never longer than half of `train.distributed_timeout`, after which JAX's coordination service, which process 0
hosts, would end it for a dead peer): its exit takes the service down, which ends the others at once with JAX's
fatal log in place of their line."""
_report_grace = 0.0
"""`REPORT_GRACE_SECONDS`, or half the run's timeout if shorter, once a multi-process run failed."""


def is_writer() -> bool:
    """Whether this process writes the run folder: always in a one-process run, process 0 in a multi-process one."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def multi_process() -> bool:
    """Whether this run spans more than one process."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def resolve(launch: ProcessConfig | None = None) -> ProcessConfig:
    """`launch`'s fields, the unset ones from the environment (empty / 0 / -1 where neither sets them: JAX detects
    them). Raises `ConfigError` for a malformed value."""
    launch = launch or ProcessConfig()
    address = launch.coordinator_address or os.environ.get(ENVIRONMENT["coordinator_address"], "")
    numbers = {}
    for name, unset in (("num_processes", 0), ("process_id", -1)):
        value = getattr(launch, name)
        if value == unset and os.environ.get(ENVIRONMENT[name]):
            raw = os.environ[ENVIRONMENT[name]]
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"${ENVIRONMENT[name]} must be a whole number, got {raw!r}") from None
        numbers[name] = value
    resolved = ProcessConfig(address, numbers["num_processes"], numbers["process_id"])
    check(resolved)
    return resolved


def check(launch: ProcessConfig) -> None:
    """One-line `ConfigError` for an address that is not host:port or a process id outside the process count."""
    if launch.coordinator_address:
        host, sep, port = launch.coordinator_address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"coordinator address {launch.coordinator_address!r} is not host:port (e.g. 10.0.0.1:1234)"
            )
        try:
            socket.getaddrinfo(host.strip("[]"), int(port))
        except OSError as err:
            address = launch.coordinator_address
            raise ConfigError(f"coordinator address {address!r}: cannot resolve {host} ({err})") from None
    if launch.num_processes < 0:
        raise ConfigError(f"the process count must be positive, got {launch.num_processes}")
    if launch.num_processes and not -1 <= launch.process_id < launch.num_processes:
        raise ConfigError(f"process id {launch.process_id} is not in 0..{launch.num_processes - 1}")


def start(config: Config, launch: ProcessConfig | None = None) -> None:
    """Join the process group of `config` (`train.distributed`), once per Python process; waits at most
    `train.distributed_timeout` seconds for every process to join, then fails with one line."""
    if not config.train.distributed or jax.distributed.is_initialized():
        return
    timeout = config.train.distributed_timeout
    if timeout <= 0:
        raise ConfigError(f"train.distributed_timeout must be positive seconds, got {timeout}")
    launch = resolve(launch)
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        # CPU devices of different processes talk through Gloo (TCP); GPU and TPU ones use their own links.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = launch.coordinator_address or "the auto-detected coordinator"
    who = f"process {launch.process_id} of {launch.num_processes}" if launch.num_processes else "this process"
    watchdog = threading.Timer(timeout, _give_up, [f"{who} waited {timeout}s at {where} for every process to join"])
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=launch.coordinator_address or None,
            num_processes=launch.num_processes or None,
            process_id=None if launch.process_id < 0 else launch.process_id,
            initialization_timeout=timeout + JAX_GRACE_SECONDS,
            heartbeat_timeout_seconds=timeout,
            shutdown_timeout_seconds=timeout,
        )
    except (ValueError, RuntimeError, TypeError) as err:
        raise DistributedError(f"{who} cannot join the process group at {where} ({_first_line(err)})") from None
    finally:
        watchdog.cancel()
    print(
        f"Process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
        f"{jax.device_count()} devices (coordinator {where})",
        flush=True,
    )


@contextlib.contextmanager
def process_group(config: Config, launch: ProcessConfig | None = None) -> Iterator[None]:
    """`start`, then the body; on success leave the group, on an error raise it as one `DistributedError` line
    (a collective fails when another process died: this process says so instead of a traceback)."""
    global _abandoned, _report_grace
    start(config, launch)
    try:
        yield
    except BaseException as err:  # also Ctrl-C: the process must not then wait for its peers at exit
        if not multi_process():
            raise
        _abandoned = True
        _report_grace = min(REPORT_GRACE_SECONDS, config.train.distributed_timeout / 2)
        if not isinstance(err, Exception):
            raise
        raise DistributedError(_stopped(err)) from None
    if multi_process():
        jax.distributed.shutdown()


def exit_if_abandoned(code: int) -> None:
    """End this process now with `code` if its multi-process run failed: leaving the group the normal way would
    wait for the dead peer until the timeout and then abort with a C++ stack trace under the one-line error."""
    if _abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        _let_every_process_report()
        os._exit(code)


def _let_every_process_report() -> None:
    """Once this process has printed its line: a process other than 0 says so in JAX's key-value store; process 0
    waits (at most `_report_grace` seconds) until every other one has, so that its exit, which ends them, comes
    after their own lines. A peer that died or still runs is not waited for longer; nothing here raises."""
    from jax._src import distributed as jax_distributed  # private: JAX has no public key-value store

    client = getattr(jax_distributed.global_state, "client", None)
    if client is None:
        return
    try:
        if jax.process_index():
            client.key_value_set(f"fer_jax/reported/{jax.process_index()}", "1")
            return
        deadline = time.monotonic() + _report_grace
        for peer in range(1, jax.process_count()):
            wait_ms = max(1, int(1000 * (deadline - time.monotonic())))
            client.blocking_key_value_get(f"fer_jax/reported/{peer}", wait_ms)
    except Exception:  # a peer that never reports, or the service already gone: leave now
        pass


def close_after_failure(error: BaseException, *closers: Callable[[], object] | None) -> None:
    """Call each of `closers` (None: nothing to close, e.g. the TensorBoard file of a process that writes none)
    while `error` ends the run: one that fails too is noted on `error`, never raised in its place, so the process
    reports why it stopped and not what its cleanup then met (a dead peer, a closed file)."""
    for close in closers:
        if close is None:
            continue
        try:
            close()
        except Exception as cleanup_error:  # the run's own error is the one to report
            error.add_note(f"then {getattr(close, '__qualname__', close)} failed: {_first_line(cleanup_error)}")


def barrier(name: str) -> None:
    """Wait until every process got here (nothing in a one-process run); a dead peer fails it within the timeout."""
    if multi_process():
        multihost_utils.sync_global_devices(f"fer_jax:{name}")


def same_everywhere(values: dict[str, float]) -> dict[str, float]:
    """Process 0's `values` in every process, exactly, so decisions made on them (early stopping, the NaN guard)
    agree everywhere."""
    return json.loads(shared_string(json.dumps(values))) if multi_process() else values


def shared_string(text: str) -> str:
    """Process 0's `text` in every process (e.g. a run folder named after process 0's clock)."""
    if not multi_process():
        return text
    data = text.encode()
    if len(data) > MAX_STRING_BYTES:
        raise ConfigError(f"{text[:60]}...: longer than {MAX_STRING_BYTES} bytes")
    padded = jnp.zeros(MAX_STRING_BYTES, jnp.uint8).at[: len(data)].set(jnp.asarray(list(data), jnp.uint8))
    received: Any = multihost_utils.broadcast_one_to_all(padded)
    return bytes(int(b) for b in received.tolist()).rstrip(b"\0").decode()


def _stopped(err: Exception) -> str:
    """This process's one line about `err`: a collective or barrier fails with a JaxRuntimeError when a peer is
    gone; any other error is this process's own."""
    line = f"process {jax.process_index()} of {jax.process_count()} stopped: {_first_line(err)}"
    if isinstance(err, jax.errors.JaxRuntimeError):
        line += " (another process is gone? its log says why; resume with --resume)"
    return line


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


def _give_up(message: str) -> None:
    """The watchdog's end of a process that cannot join: one line, exit status 2 (JAX would abort later)."""
    print(f"fer-jax train: error: {message}; start all of them, or check the address", file=sys.stderr, flush=True)
    os._exit(2)
