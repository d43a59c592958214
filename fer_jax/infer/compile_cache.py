"""JAX's persistent compilation cache for fer-jax's inference: compile once per machine, not once per process.

A cold `fer-jax predict photo.jpg` otherwise spends most of its compute compiling the classifier again. The
compiled programs go to `$FER_JAX_COMPILE_CACHE`, else `<fer-jax cache root>/jax-compile` (the user cache folder
of `fer_jax.data.cache`, e.g. ~/.cache/fer-jax), in a subfolder per jaxlib version and CPU, so a home folder
shared by machines of different instruction sets never hands one of them another's code. `FER_JAX_COMPILE_CACHE=off`
turns it off. A user who configured `jax_compilation_cache_dir` keeps that setting.

A damaged entry is no risk to a prediction: JAX checks each entry (zlib's checksum), warns, and compiles afresh.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path

from fer_jax.data.cache import default_cache_root
from fer_jax.environment import cpuinfo_field

COMPILE_CACHE_ENV = "FER_JAX_COMPILE_CACHE"
DISABLED = ("off", "0", "false", "no", "none")
"""Values of $FER_JAX_COMPILE_CACHE that turn the cache off."""


def machine_tag() -> str:
    """jaxlib's version and a short hash of the CPU's model and instruction-set flags."""
    cpu = f"{platform.machine()} {cpuinfo_field('model name')} {cpuinfo_field('flags')}"
    return f"jaxlib{importlib.metadata.version('jaxlib')}-{hashlib.sha256(cpu.encode()).hexdigest()[:12]}"


def compile_cache_dir() -> Path | None:
    """Where this machine's compiled programs are kept (None: turned off by $FER_JAX_COMPILE_CACHE)."""
    given = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if given.lower() in DISABLED:
        return None
    root = Path(given).expanduser().absolute() if given else default_cache_root() / "jax-compile"
    return root / machine_tag()


def use_compile_cache() -> Path | None:
    """Point JAX's persistent compilation cache at `compile_cache_dir()` (every program, however quick to
    compile) unless the user set one; returns the folder in use. Call it before the first JAX computation:
    JAX decides at its first compilation whether the cache is used."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    folder = compile_cache_dir()
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
