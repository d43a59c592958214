"""What a run ran on: library versions, device, git commit and command, for every results file."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "torchvision")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    """'cpu: <model> (<n> cores)' or '<platform>: <device kind> x<count>'."""
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
