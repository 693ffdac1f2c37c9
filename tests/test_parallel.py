"""Replicas and parameter sets sharded over devices (`diffmd.parallel`).

JAX fixes the number of devices when it starts, so the two-device checks run in a child
process with `XLA_FLAGS=--xla_force_host_platform_device_count=2` (two CPU "devices"): it
computes every quantity both with `map_replicas` over 2 devices and with a plain `jax.vmap`
on one, and prints them as JSON; the assertions are made here.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from diffmd.parallel import AXIS, map_replicas, replica_mesh, replica_sharding

CHILD = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import diffmd as md
from diffmd.parallel import map_replicas, replica_mesh

N, BOX = 16, md.CubicBoundary(4.4, n_dims=2)
GRID = (np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2) + 0.5) * 1.1
INTEGRATOR = md.VelocityVerlet(0.005)

def run(key, sigma=1.0, epsilon=1.0):
    """One replica: its start drawn from its key inside the traced function (16 LJ atoms, 2-D,
    neighbor list with an explicit capacity), 30 steps; final coordinates and energies."""
    k_x, k_v = jax.random.split(key)
    system = md.System(
        atoms=md.Atoms.uniform(N, mass=1.0, sigma=sigma, epsilon=epsilon),
        coords=GRID + 0.05 * jax.random.normal(k_x, (N, 2)),
        velocities=md.random_velocities(k_v, jnp.ones(N), 1.0, md.REDUCED_UNITS, n_dims=2),
        boundary=BOX, units=md.REDUCED_UNITS,
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(1.5)),),
        neighbor_finder=md.DistanceNeighborFinder(1.9, capacity=15),
        loggers={"pe": md.PotentialEnergyLogger(10)},
    )
    trajectory = md.simulate(system, INTEGRATOR, 30)
    return trajectory.coords, trajectory.logs["pe"]

out = {"devices": len(jax.devices())}
mesh = replica_mesh()

# 1. An ensemble of 4 replicas: values, where they live, and no communication in the run.
keys = jax.random.split(jax.random.PRNGKey(0), 4)
sharded = jax.jit(lambda k: map_replicas(run, k, mesh=mesh)).lower(keys).compile()
coords, pe = sharded(keys)
ref_coords, ref_pe = jax.jit(jax.vmap(run))(keys)
text = sharded.as_text()
out["ensemble"] = {
    "coords": np.asarray(coords).tolist(), "pe": np.asarray(pe).tolist(),
    "ref_coords": np.asarray(ref_coords).tolist(), "ref_pe": np.asarray(ref_pe).tolist(),
    "spec": [str(a) for a in getattr(coords.sharding, "spec", [type(coords.sharding).__name__])],
    "shard_devices": sorted(s.device.id for s in coords.addressable_shards),
    "shard_shapes": [list(s.data.shape) for s in coords.addressable_shards],
    "collectives": sum(text.count(op) for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute")),
}

# 2. Gradient of an ensemble-averaged loss with respect to sigma (shared, closed over), over
#    5 replicas: an odd batch, padded to 6 on 2 devices.
keys5 = jax.random.split(jax.random.PRNGKey(1), 5)
def ensemble_loss(sigma, batch_map):
    _, pe = batch_map(lambda k: run(k, sigma=sigma), keys5)
    return jnp.mean(pe[:, -1])
grad_sharded = jax.jit(jax.value_and_grad(lambda s: ensemble_loss(s, lambda f, k: map_replicas(f, k, mesh=mesh))))
grad_vmap = jax.jit(jax.value_and_grad(lambda s: ensemble_loss(s, lambda f, k: jax.vmap(f)(k))))
out["ensemble_grad"] = {"sharded": [float(v) for v in grad_sharded(1.0)], "vmap": [float(v) for v in grad_vmap(1.0)],
                        "first_replica_only": [float(v) for v in jax.value_and_grad(
                            lambda s: run(keys5[0], sigma=s)[1][-1])(1.0)]}

# 3. A batch of 3 parameter sets (sigma, epsilon) from one start, each with its own gradient:
#    the same function, batched over parameters instead of starts; 3 is padded to 4.
def final_energy(params):
    sigma, epsilon = params
    return run(jax.random.PRNGKey(2), sigma=sigma, epsilon=epsilon)[1][-1]
params = (jnp.array([0.9, 1.0, 1.1]), jnp.array([1.0, 0.8, 1.2]))
values, grads = jax.jit(lambda p: map_replicas(jax.value_and_grad(final_energy), p, mesh=mesh))(params)
ref_values, ref_grads = jax.jit(jax.vmap(jax.value_and_grad(final_energy)))(params)
out["parameter_sets"] = {"values": np.asarray(values).tolist(), "grads": np.asarray(grads).tolist(),
                         "ref_values": np.asarray(ref_values).tolist(), "ref_grads": np.asarray(ref_grads).tolist()}
print("RESULT " + json.dumps(out))
'''


# Two processes with 2 host devices each, joined by jax.distributed into one 4-device mesh:
# what several hosts (or GPUs in several processes) do. Each process feeds its own rows of the
# batch; process 0 also computes the single-process vmap as the reference.
MULTI_PROCESS_CHILD = r'''
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
process_id, port = int(sys.argv[1]), sys.argv[2]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
import jax.numpy as jnp, numpy as np
import diffmd as md

N, BOX = 16, md.CubicBoundary(4.4, n_dims=2)
GRID = (np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2) + 0.5) * 1.1

def final_energy(key, sigma):
    k_x, k_v = jax.random.split(key)
    system = md.System(
        atoms=md.Atoms.uniform(N, mass=1.0, sigma=sigma, epsilon=1.0),
        coords=GRID + 0.05 * jax.random.normal(k_x, (N, 2)),
        velocities=md.random_velocities(k_v, jnp.ones(N), 1.0, md.REDUCED_UNITS, n_dims=2),
        boundary=BOX, units=md.REDUCED_UNITS,
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(1.5)),),
        neighbor_finder=md.DistanceNeighborFinder(1.9, capacity=15),
    )
    return md.simulate(system, md.VelocityVerlet(0.005), 30).state.potential_energy

B = 8
all_keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), B))
mesh = md.replica_mesh()
rows = B // jax.process_count()
mine = all_keys[jax.process_index() * rows:(jax.process_index() + 1) * rows]
keys = jax.make_array_from_process_local_data(md.replica_sharding(mesh), mine)
energies = jax.jit(lambda s, k: md.map_replicas(lambda kk: final_energy(kk, s), k, mesh=mesh))(1.0, keys)
loss = jax.jit(jax.value_and_grad(lambda s, k: jnp.mean(md.map_replicas(lambda kk: final_energy(kk, s), k, mesh=mesh))))
out = {"devices": len(jax.devices()), "processes": jax.process_count(),
       "fully_addressable": energies.is_fully_addressable,
       "local_rows": sorted(i.start for i in (s.index[0] for s in energies.addressable_shards)),
       "value_and_grad": [float(v) for v in loss(1.0, keys)]}
if process_id == 0:
    reference = jax.value_and_grad(lambda s: jnp.mean(jax.vmap(lambda k: final_energy(k, s))(all_keys)))
    out["reference"] = [float(v) for v in jax.jit(reference)(1.0)]
print("RESULT " + json.dumps(out), flush=True)
'''


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """Run CHILD on 2 host devices; its JSON output."""
    script = tmp_path_factory.mktemp("parallel") / "two_devices.py"
    script.write_text(CHILD)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow  # the two-device child process takes ~30 s to start
def test_child_sees_two_devices(two_devices):
    assert two_devices["devices"] == 2


@pytest.mark.slow  # the two-device child process takes ~30 s to start
def test_ensemble_over_two_devices_equals_vmap_and_is_sharded(two_devices):
    r = two_devices["ensemble"]
    coords, ref_coords = np.array(r["coords"]), np.array(r["ref_coords"])
    assert coords.shape == (4, 16, 2) and np.array(r["pe"]).shape == (4, 3)
    np.testing.assert_allclose(coords, ref_coords, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r["pe"], r["ref_pe"], rtol=1e-10)
    # the replicas really are different simulations, and they moved
    assert not np.allclose(coords[0], coords[1], atol=1e-3)
    assert len({round(p[-1], 8) for p in r["pe"]}) == 4
    # half of the batch on each device, and no cross-device traffic in the compiled run
    assert r["spec"] == ["replicas"]
    assert r["shard_devices"] == [0, 1]
    assert r["shard_shapes"] == [[2, 16, 2], [2, 16, 2]]
    assert r["collectives"] == 0


@pytest.mark.slow  # the two-device child process takes ~30 s to start
def test_gradient_of_ensemble_mean_over_two_devices_equals_vmap(two_devices):
    """5 replicas on 2 devices (padded to 6, padding stripped): the mean and d mean/dσ equal
    the single-device vmap's; the padded copy of replica 5 adds nothing."""
    r = two_devices["ensemble_grad"]
    np.testing.assert_allclose(r["sharded"], r["vmap"], rtol=1e-10)
    assert abs(r["vmap"][1]) > 1.0  # a real gradient
    # not one replica's gradient: the mean over 5 different ones
    assert not np.isclose(r["vmap"][1], r["first_replica_only"][1], rtol=1e-3)


@pytest.mark.slow  # the two-device child process takes ~30 s to start
def test_parameter_sets_over_two_devices_equal_vmap(two_devices):
    r = two_devices["parameter_sets"]
    assert np.array(r["values"]).shape == (3,) and np.array(r["grads"]).shape == (2, 3)  # padding stripped
    np.testing.assert_allclose(r["values"], r["ref_values"], rtol=1e-10)
    np.testing.assert_allclose(r["grads"], r["ref_grads"], rtol=1e-10)
    assert len({round(v, 6) for v in r["values"]}) == 3


# ---- in this process (one device) ------------------------------------------------------


def test_one_device_mesh_and_odd_batch():
    mesh = replica_mesh()
    assert mesh.axis_names == (AXIS,) and mesh.shape[AXIS] == len(jax.devices())
    x = jnp.arange(15.0).reshape(5, 3)
    fn = lambda row, scale: (jnp.sum(row**2) * scale, row[::-1])  # noqa: E731
    total, flipped = map_replicas(fn, x, jnp.arange(5.0), mesh=mesh)
    expected = jax.vmap(fn)(x, jnp.arange(5.0))
    np.testing.assert_allclose(total, expected[0])
    np.testing.assert_allclose(flipped, expected[1])
    assert replica_sharding(mesh).spec == jax.sharding.PartitionSpec(AXIS)


def test_map_replicas_errors():
    with pytest.raises(ValueError, match="n_devices"):
        replica_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="n_devices"):
        replica_mesh(0)
    with pytest.raises(ValueError, match="same, non-zero leading size"):
        map_replicas(lambda a, b: a + b, jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="same, non-zero leading size"):
        map_replicas(lambda a: a, jnp.float64(1.0))
    with pytest.raises(ValueError, match="at least one batched argument"):
        map_replicas(lambda: 1.0)
    other = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("x",))
    with pytest.raises(ValueError, match="axis named 'replicas'"):
        map_replicas(lambda a: a, jnp.ones(2), mesh=other)


@pytest.mark.slow
def test_two_processes_joined_by_jax_distributed(tmp_path):
    """Several hosts, simulated: 2 processes × 2 CPU devices after jax.distributed.initialize,
    each feeding its half of the batch. Marked slow: it needs a free localhost port."""
    script = tmp_path / "multi_process.py"
    script.write_text(MULTI_PROCESS_CHILD)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"process failed (rc {proc.returncode}):\n{stderr[-4000:]}"
        results.append(json.loads(lines[-1][len("RESULT "):]))
    for r in results:
        assert r["devices"] == 4 and r["processes"] == 2 and not r["fully_addressable"]
        np.testing.assert_allclose(r["value_and_grad"], results[0]["reference"], rtol=1e-10)
    assert abs(results[0]["reference"][1]) > 1.0
    # each process holds its own 4 of the 8 rows (2 per local device)
    assert results[0]["local_rows"] == [0, 2] and results[1]["local_rows"] == [4, 6]
