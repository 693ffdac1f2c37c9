"""Replicas and parameter sets sharded over devices with JAX's own sharding.

An ensemble of independent simulations — replicas that differ in their start (coordinates,
velocities, PRNG keys), or parameter sets (σ, ε, network weights) — is a batch. `jax.vmap`
runs a batch on one device; `map_replicas` runs the same `jax.vmap` with the batch split over
the devices of a one-axis mesh, each device simulating its own slice with no communication
during the run:

    mesh = replica_mesh()                                     # every device: jax.devices()
    finals = map_replicas(run_one, keys, mesh=mesh)           # == jax.vmap(run_one)(keys)

It is a `jax.shard_map` of `jax.vmap(fn)` over the mesh axis "replicas". The result is the
vmap's, to rounding (equal to the last bit on CPU in the tests), as a global array sharded
over the devices; anything computed from it (an ensemble mean, a loss) runs as usual, and
`jax.grad` / `jax.value_and_grad` of such a loss flow back through every device. Values that
all replicas share (σ being trained, the integrator) are closed over by `fn`, as with vmap.

The same code runs on one CPU (`XLA_FLAGS=--xla_force_host_platform_device_count=2` makes two
host "devices"), several GPUs of one process (`jax.devices()`), or several hosts after
`jax.distributed.initialize()` (the mesh then spans every host's devices); see
`docs/parallel.md`.

Why `shard_map` and not `jax.jit` with `NamedSharding` in/out shardings: both give the same
values, but with jit the SPMD partitioner has to propagate the batch sharding through the
neighbor-list build, `lax.cond`s and the error checks of `simulate`, and for a vmapped
`simulate` it inserted ~20 cross-device all-reduces into the compiled loop (replicating
per-replica state); `shard_map` runs the unchanged single-device program on each slice, so
the compiled run holds no collective at all.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "replicas"
"""Name of the mesh axis along which the batch is split."""


def replica_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis `Mesh` (axis name "replicas") over the first `n_devices` of `jax.devices()`.

    Args:
        n_devices: how many devices to use; None uses every device — after
            `jax.distributed.initialize()`, every device of every host.

    Raises:
        ValueError: `n_devices` is not between 1 and the number of devices.
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(f"replica_mesh: n_devices must be an integer from 1 to {len(devices)} "
                         f"(jax.devices() has {len(devices)}), got {n_devices!r}")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def replica_sharding(mesh: Mesh | None = None) -> NamedSharding:
    """The sharding of a batch over `mesh`: leading axis split along "replicas", the rest whole.

    Use it to place a batch on the devices beforehand (`jax.device_put(batch, sharding)`), or,
    on several hosts, to assemble a global batch from each host's part
    (`jax.make_array_from_process_local_data(sharding, local_part)`).
    """
    return NamedSharding(replica_mesh() if mesh is None else mesh, PartitionSpec(AXIS))


def map_replicas(fn, *batched_args, mesh: Mesh | None = None):
    """`jax.vmap(fn)(*batched_args)` with the batch split over the devices of `mesh`.

    Every leaf of every argument is batched along its leading axis (all the same size B), as
    `jax.vmap(fn)` with `in_axes=0`; values shared by all replicas are closed over by `fn`.
    Works eagerly and under `jax.jit`, `jax.grad`, `jax.value_and_grad` (gradients with
    respect to closed-over values are summed over the replicas of every device, as with vmap).
    Call it inside your jitted function: eagerly it is traced and compiled on every call.

    A batch that is not a multiple of the number of devices D is padded to the next multiple
    with copies of its last element (valid inputs, so a padded replica cannot fail where the
    real one does not), and the padding is removed from the result: at most D − 1 replicas of
    extra work, and a padded copy adds nothing to gradients (its output is dropped). Outputs
    whose size is a multiple of D stay sharded over the devices; a stripped output (B not a
    multiple of D) is resharded as XLA chooses.

    Inside `fn`, `simulate` cannot size a neighbor list from coordinates it only sees traced:
    give the finder a `capacity` (`DistanceNeighborFinder(..., capacity=k)`), as under vmap.
    Each replica needs its own PRNG key, passed as a batched argument
    (`jax.random.split(key, B)`), if its start or thermostat is random.

    Args:
        fn: function of one replica's arguments (leading axis removed) returning a pytree of
            arrays; it may call `diffmd.simulate` (neighbor lists included).
        *batched_args: pytrees of arrays with a common leading size B ≥ 1.
        mesh: a `Mesh` with an axis named "replicas" (`replica_mesh()`, the default, uses
            every device); other mesh axes, if any, hold copies.

    Returns:
        The pytree `jax.vmap(fn)(*batched_args)`: each leaf has leading size B.

    Raises:
        ValueError: no batched argument, leaves of different leading sizes, or a mesh
            without a "replicas" axis.
    """
    mesh = replica_mesh() if mesh is None else mesh
    if AXIS not in mesh.shape:
        raise ValueError(f"map_replicas: the mesh needs an axis named {AXIS!r}; its axes are {tuple(mesh.shape)}")
    leaves = jax.tree_util.tree_leaves(batched_args)
    if not leaves:
        raise ValueError("map_replicas: give at least one batched argument (an array with a leading batch axis)")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(f"map_replicas: every leaf of the batched arguments needs the same, non-zero leading "
                         f"size; got leading sizes {sorted(sizes, key=str)}")
    (size,) = sizes
    n_devices = mesh.shape[AXIS]
    padded = math.ceil(size / n_devices) * n_devices
    if padded != size:
        batched_args = jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - size, axis=0)]), batched_args)
    # check_vma=False: simulate's scan starts from constants that are the same on every
    # device (e.g. the step counter) and ends with per-device values; the replicas never
    # communicate, so there is nothing for the check to protect.
    sharded = jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=PartitionSpec(AXIS), out_specs=PartitionSpec(AXIS),
                            check_vma=False)
    out = sharded(*batched_args)
    if padded != size:
        out = jax.tree_util.tree_map(lambda x: x[:size], out)
    return out
