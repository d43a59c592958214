"""Data parallelism: one 1-D mesh over the devices, batches split along it, everything else replicated.

The trainer is the same for 1..N devices: `jax.jit` partitions the step by the
shardings of its inputs and adds the gradient all-reduce itself (GSPMD). On a
CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=4` (set before JAX is
imported) makes four devices to try it with.

In a multi-process run (`fer_jax.train.distributed`) the mesh spans every process's devices. Each
process computes the same global batch (same order, same augmentation) and hands its own devices
only its rows of it (`jax.make_array_from_process_local_data`); outputs gathered for the host are
replicated, so every process reads the same numbers.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fer_jax.config import ConfigError
from fer_jax.train.distributed import multi_process

BATCH_AXIS = "batch"


def make_mesh(devices: int = 0) -> Mesh:
    """A mesh over the first `devices` devices (0: all of them, of every process in a multi-process run)."""
    available = jax.devices()
    if multi_process() and devices not in (0, len(available)):
        raise ConfigError(f"train.devices={devices}: a multi-process run uses all {len(available)} devices (0)")
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


def replicate(mesh: Mesh, array: jax.Array) -> jax.Array:
    """A copy of `array` on every device of the mesh (each process passes the same array in a multi-process run)."""
    if multi_process():
        return jax.make_array_from_process_local_data(replicated(mesh), array, array.shape)
    return jax.device_put(array, replicated(mesh))


def shard_batch(mesh: Mesh, *arrays: jax.Array, axis: int = 0) -> tuple[jax.Array, ...]:
    """Place arrays split along `axis` over the mesh (no copy when there is one device and they are on it).

    In a multi-process run every process passes the same global arrays and puts only its own rows on
    its devices."""
    sharding = batch_sharded(mesh, axis)
    if multi_process():
        return tuple(_from_process_rows(sharding, array, axis) for array in arrays)
    return tuple(jax.device_put(array, sharding) for array in arrays)


def _from_process_rows(sharding: NamedSharding, array: jax.Array, axis: int) -> jax.Array:
    """The global array `array` as `sharding` places it, built from this process's rows of it alone."""
    slices = [index[axis] for index in sharding.addressable_devices_indices_map(array.shape).values()]
    stops = [array.shape[axis] if s.stop is None else s.stop for s in slices]
    rows = slice(min(s.start or 0 for s in slices), max(stops))
    local = array[(slice(None),) * axis + (rows,)]
    return jax.make_array_from_process_local_data(sharding, local, array.shape)


def gather_outputs(mesh: Mesh) -> dict[str, Any]:
    """`jax.jit` options for a step whose outputs the host reads: replicated in a multi-process run, where no
    process may read another's devices; as XLA chooses otherwise."""
    return {"out_shardings": replicated(mesh)} if multi_process() else {}


def to_first_device(mesh: Mesh, tree: Any) -> Any:
    """Gather (e.g. evaluation outputs) onto the mesh's first device, where host-side code combines them
    with arrays of its own (labels from DLPack live there); free with one device. In a multi-process run
    (outputs replicated by `gather_outputs`): this process's copy, on its first device."""
    if multi_process():
        return jax.tree.map(lambda array: array.addressable_data(0), tree)
    return tree if mesh.size == 1 else jax.device_put(tree, mesh.devices.flat[0])
