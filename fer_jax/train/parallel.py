"""Data parallelism: one 1-D mesh over the devices, batches split along it, everything else replicated.

The trainer is the same for 1..N devices: `jax.jit` partitions the step by the
shardings of its inputs and adds the gradient all-reduce itself (GSPMD). On a
CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=4` (set before JAX is
imported) makes four devices to try it with.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fer_jax.config import ConfigError

BATCH_AXIS = "batch"


def make_mesh(devices: int = 0) -> Mesh:
    """A mesh over the first `devices` local devices (0: all of them)."""
    available = jax.devices()
    if devices < 0 or devices > len(available):
        raise ConfigError(f"train.devices={devices}, but {len(available)} device(s) are available (0 uses all)")
    return Mesh(available[: devices or len(available)], (BATCH_AXIS,))


def check_divisible(mesh: Mesh, batch_size: int, name: str) -> None:
    """Every device gets the same share of a batch, so its size must divide evenly."""
    if batch_size % mesh.size:
        raise ConfigError(f"{name}={batch_size} is not divisible by the {mesh.size} devices it is split over")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split dimension `axis` over the mesh; the others are replicated."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), BATCH_AXIS))


def shard_batch(mesh: Mesh, *arrays: jax.Array, axis: int = 0) -> tuple[jax.Array, ...]:
    """Place arrays split along `axis` over the mesh (no copy when there is one device and they are on it)."""
    sharding = batch_sharded(mesh, axis)
    return tuple(jax.device_put(array, sharding) for array in arrays)


def to_first_device(mesh: Mesh, tree: Any) -> Any:
    """Gather (e.g. evaluation outputs) onto the mesh's first device, where host-side code combines them
    with arrays of its own (labels from DLPack live there); free with one device."""
    return tree if mesh.size == 1 else jax.device_put(tree, mesh.devices.flat[0])
