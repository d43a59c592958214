"""`fer-jax` commands in processes forked from one that has already imported the package.

Starting `python -m fer_jax train` costs about 8 CPU-seconds of imports (torch, torchvision, JAX, Flax,
Orbax) before any work; the multi-process tests start eight such processes. Here they are forked from
multiprocessing's forkserver, which imports those modules once and nothing else: it starts no JAX backend, so
each child starts its own runtime (with its own XLA_FLAGS) exactly as a fresh `fer-jax` process does, under
its own PID, and ends with the exit code `fer-jax` would give.

JAX reads JAX_* variables when it is imported, so those come from the environment the forkserver starts
with (`server`); XLA_FLAGS is read when a backend starts, so each command may set its own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Callable, Iterator
from pathlib import Path

PRELOAD = ["fer_jax.cli", "fer_jax.train.trainer", "tests.forked"]
"""What every `fer-jax train` imports, and this module (the children's entry point)."""
CONTEXT = multiprocessing.get_context("forkserver")
Process = multiprocessing.context.ForkServerProcess


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[None]:
    """The forkserver, started with `env` as its environment and `PRELOAD` imported, and stopped at the end (so
    reaped: its children's CPU time then counts in this process's RUSAGE_CHILDREN)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        multiprocessing.set_forkserver_preload(PRELOAD)
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield
    finally:
        multiprocessing.forkserver._forkserver._stop()  # private, but the only way to stop it before we exit


def start(target: Callable[..., object], args: tuple, cwd: Path, env: dict[str, str], log: Path) -> Process:
    """Run `target(*args)` in a forked process in `cwd`, with `env` and its output in `log`."""
    process = CONTEXT.Process(target=_run, args=(target, args, str(cwd), env, str(log)))
    process.start()
    return process


def fer_jax(*argv: str) -> None:
    """What `python -m fer_jax ARGV` does."""
    from fer_jax.cli import main

    raise SystemExit(main(argv))


def _run(target: Callable[..., object], args: tuple, cwd: str, env: dict[str, str], log: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    target(*args)
