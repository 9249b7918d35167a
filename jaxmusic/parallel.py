"""Data parallelism: one 1-D mesh named 'data' over every device of every host.

Parameters and optimizer state are replicated; a batch is split on its first axis;
the per-device step runs under `jax.shard_map` and averages with `lax.psum`. This
is the role the design gives `pmap`, written the way current JAX builds pmap
itself (jit + shard_map). One device is the same code path with a mesh of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmusic.errors import UsageError

AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (default: every device of every host)."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def global_batch_size(config: Any, device_count: int | None = None) -> int:
    """The global batch a config asks for: `batch_size`, or `batch_size_per_device` times
    the devices (every device of every host), so a pod keeps each chip's batch as it
    grows. Exactly one of the two is set (> 0).

    Raises:
      UsageError: both or neither are set, or one is negative.
    """
    total, per_device = config.get("batch_size", 0) or 0, config.get("batch_size_per_device", 0) or 0
    if total < 0 or per_device < 0 or (total > 0) == (per_device > 0):
        raise UsageError(
            "config: set exactly one of batch_size (global) and batch_size_per_device, "
            f"got batch_size={total} and batch_size_per_device={per_device}"
        )
    return total or per_device * (device_count if device_count is not None else jax.device_count())


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles every host's share into global arrays sharded on the batch axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}


def data_parallel(fn: Callable, mesh: Mesh, *, in_specs: Any, out_specs: Any) -> Callable:
    """`fn` run per device under shard_map on the 'data' axis (not jitted)."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def batch_spec() -> P:
    return P(AXIS)


def replicated_spec() -> P:
    return P()


def initialize_distributed(
    *, coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
    auto: bool = False,
) -> None:  # fmt: skip
    """Joins a multi-process run before any other JAX call; a no-op for one process.

    Args:
      coordinator: "host:port" of process 0 (GPU or CPU clusters).
      num_processes, process_id: this run's size and this process's rank.
      auto: let JAX find its peers from the environment (Cloud TPU pod slices,
        SLURM, Open MPI), with no other argument.
    """
    if not auto and coordinator is None:
        if num_processes not in (None, 1):
            raise UsageError(
                "num_processes > 1 needs a coordinator address (or auto discovery, on a TPU pod)"
            )
        return
    # All-reduce across processes on the CPU backend (simulated runs, tests); the
    # GPU and TPU backends bring their own collectives and ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if auto:
        jax.distributed.initialize()
    else:
        if num_processes is None or process_id is None:
            raise UsageError("a coordinator address needs num_processes and process_id")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
