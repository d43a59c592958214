"""What a run ran on: library versions, device, git commit and command, for every results file."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "torchvision")
CPUINFO = Path("/proc/cpuinfo")
PROJECT_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",)
"""XLA flags the project's own processes run with. jaxlib 0.10.2's XLA:CPU hands convolutions, dots and reductions
to YNNPACK by default, and YNNPACK's convolution gradients run the CPU-best net's train step at half speed on an
AVX2 CPU (the seed CNN's at a fifth); with YNNPACK kept for dots only, XLA's own (Eigen) convolutions run it
(docs/performance.md). GPU and TPU back-ends ignore the flag."""
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""The /proc/cpuinfo flags that decide a CPU's speed here: vector width and bfloat16 matrix units."""


def use_project_xla_flags() -> str:
    """Append `PROJECT_XLA_FLAGS` to $XLA_FLAGS and return the result: a flag the user already set keeps
    the user's value. XLA reads the variable once, when its first backend starts, so the CLI, the
    experiments, the tests and the notebooks call this before their first JAX computation."""
    current = os.environ.get("XLA_FLAGS", "")
    names = {flag.split("=", 1)[0] for flag in current.split()}
    added = [flag for flag in PROJECT_XLA_FLAGS if flag.split("=", 1)[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return os.environ["XLA_FLAGS"]


@functools.cache
def cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The value of the first `name` line of /proc/cpuinfo (None where it has none or cannot be read); read
    once per field, as models built with compute_dtype='auto' ask for every layer."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_features(cpuinfo: Path = CPUINFO) -> list[str]:
    """Which of `CPU_FEATURES` this CPU has (empty where /proc/cpuinfo is unreadable)."""
    flags = set((cpuinfo_field("flags", cpuinfo) or "").split())
    return [feature for feature in CPU_FEATURES if feature in flags]


def has_bfloat16_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_features()))


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def device_description() -> str:
    """'cpu: <model> (<n> cores)' or '<platform>: <device kind> x<count>'."""
    import jax  # here, not at the top: `fer-jax --help` and the CLI's argument errors need no JAX

    devices = jax.devices()
    if devices[0].platform == "cpu":
        return f"cpu: {cpu_model()} ({os.cpu_count()} cores)"
    return f"{devices[0].platform}: {devices[0].device_kind} x{len(devices)}"


def git_commit() -> str | None:
    """HEAD of the checkout this package lives in, with '-dirty' for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "device": device_description(),
        "cpu_features": cpu_features(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": git_commit(),
        "command": command_line(),
    }


def command_line() -> str:
    """This process's command as one would type it: `python -m MODULE ...` for a module run with -m
    (whose sys.argv[0] is the module's file), else the script's name (`fer-jax ...`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    start = ["python", "-m", spec.name.removesuffix(".__main__")] if spec else [Path(sys.argv[0]).name]
    return shlex.join([*start, *sys.argv[1:]])
