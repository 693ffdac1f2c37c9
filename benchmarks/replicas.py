"""Replicas per second of an ensemble on 1 and 2 devices (`diffmd.parallel.map_replicas`).

An ensemble of B replicas of a Lennard-Jones fluid (reduced units: N = 64 atoms in a periodic
cube of side 5, ρ = 0.512, σ = ε = m = 1, shifted-force cutoff 2.0, neighbor list to 2.3 with
room for 40 neighbors, NVE velocity Verlet at dt = 0.005, float32) runs T steps. Each replica
draws its start from its own PRNG key inside the compiled function (a jittered simple-cubic
lattice, Maxwell–Boltzmann velocities at T = 1). Two workloads:

- `forward`  the ensemble's final potential energies (simulation only);
- `gradient` the value and d/dσ of the ensemble-mean final potential energy per atom.

Three ways to run the batch, each measured in a fresh process whose device count is set with
`XLA_FLAGS=--xla_force_host_platform_device_count=D` (JAX fixes it at start-up):

- `vmap`          jax.jit(jax.vmap(...)) on 1 device (the baseline);
- `map_replicas`  the same batch split over a mesh of D = 1 or 2 devices.

Reported: replicas per second (B / seconds of the best of --repeats timed runs, after
compiling) and compile seconds. On a CPU the D host "devices" share the machine's cores, so
2 devices can only help when one device leaves cores idle.

    .venv/bin/python benchmarks/replicas.py --quick          # B = 8, T = 200 (< 1 minute)
    .venv/bin/python benchmarks/replicas.py                  # B = 16, T = 500
    .venv/bin/python benchmarks/replicas.py --json results/replicas.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

N_SIDE, SPACING, CUTOFF, LIST_CUTOFF, CAPACITY, DT = 4, 1.25, 2.0, 2.3, 40, 0.005
WORKLOADS = ("forward", "gradient")


def make_functions(n_replicas: int, n_steps: int, n_devices: int) -> dict:
    """{(method, workload): (jitted function of σ, ...)} for this process's devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import diffmd as md

    n_atoms = N_SIDE**3
    box = md.CubicBoundary(jnp.float32(N_SIDE * SPACING))
    grid = np.stack(np.meshgrid(*[np.arange(N_SIDE)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lattice = jnp.asarray((grid + 0.5) * SPACING, jnp.float32)
    integrator = md.VelocityVerlet(jnp.float32(DT))
    keys = jax.random.split(jax.random.PRNGKey(0), n_replicas)

    def final_energy(sigma, key):
        """One replica: start drawn from `key`, T steps, final potential energy per atom."""
        k_x, k_v = jax.random.split(key)
        system = md.System(
            atoms=md.Atoms.uniform(n_atoms, mass=1.0, sigma=sigma, epsilon=1.0, dtype=jnp.float32),
            coords=lattice + 0.05 * jax.random.normal(k_x, lattice.shape, jnp.float32),
            velocities=md.random_velocities(k_v, jnp.ones(n_atoms, jnp.float32), 1.0, md.REDUCED_UNITS,
                                            dtype=jnp.float32),
            boundary=box, units=md.REDUCED_UNITS,
            pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(CUTOFF)),),
            neighbor_finder=md.DistanceNeighborFinder(LIST_CUTOFF, capacity=CAPACITY),
        )
        return md.simulate(system, integrator, n_steps).state.potential_energy / n_atoms

    batch_maps = {"map_replicas": lambda f, k: md.map_replicas(f, k, mesh=md.replica_mesh(n_devices))}
    if n_devices == 1:
        batch_maps = {"vmap": lambda f, k: jax.vmap(f)(k), **batch_maps}
    functions = {}
    for method, batch_map in batch_maps.items():
        def forward(sigma, batch_map=batch_map):
            return batch_map(lambda k: final_energy(sigma, k), keys)

        def mean_energy(sigma, forward=forward):
            return jnp.mean(forward(sigma))

        functions[(method, "forward")] = jax.jit(forward)
        functions[(method, "gradient")] = jax.jit(jax.value_and_grad(mean_energy))
    return functions


def run_child(args) -> list[dict]:
    """Measure every method and workload on this process's devices."""
    import jax
    import jax.numpy as jnp

    n_devices = len(jax.devices())
    sigma = jnp.float32(1.0)
    records = []
    for (method, workload), fn in make_functions(args.replicas, args.steps, n_devices).items():
        t0 = time.perf_counter()
        compiled = fn.lower(sigma).compile()
        compile_s = time.perf_counter() - t0
        times, value = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            value = jax.block_until_ready(compiled(sigma))
            times.append(time.perf_counter() - t0)
        leaves = jax.tree_util.tree_leaves(value)
        records.append({
            "method": method, "workload": workload, "devices": n_devices, "replicas": args.replicas,
            "n_atoms": N_SIDE**3, "n_steps": args.steps, "seconds": min(times), "compile_seconds": compile_s,
            "replicas_per_second": args.replicas / min(times),
            "check": float(jnp.mean(leaves[0])),  # same ensemble, same numbers on every row
        })
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def _run_devices(n_devices: int, args) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", "--replicas", str(args.replicas), "--steps", str(args.steps),
           "--repeats", str(args.repeats)]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark on {n_devices} device(s) failed:\n{out.stderr[-3000:]}")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=None, help="ensemble size B (default 16; --quick 8)")
    p.add_argument("--steps", type=int, default=None, help="steps per replica T (default 500; --quick 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (the best is kept)")
    p.add_argument("--quick", action="store_true", help="B = 8, T = 200, 2 repeats (under 1 minute)")
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.replicas = args.replicas or (8 if args.quick else 16)
    args.steps = args.steps or (200 if args.quick else 500)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return []

    t0 = time.perf_counter()
    records = []
    for n_devices in (1, 2):
        print(f"measuring on {n_devices} device(s) (B = {args.replicas}, T = {args.steps}) ...", flush=True)
        records += _run_devices(n_devices, args)
    base = {r["workload"]: r["replicas_per_second"] for r in records if r["method"] == "vmap"}
    for r in records:
        r["speedup_vs_vmap"] = r["replicas_per_second"] / base[r["workload"]]

    print(f"\nReplicas per second, LJ fluid N = {N_SIDE**3}, B = {args.replicas}, T = {args.steps}, float32, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} ({time.perf_counter() - t0:.0f} s in all)\n")
    print("| workload | method | devices | replicas/s | × vmap | s per batch | compile s |")
    print("|---|---|---|---|---|---|---|")
    order = lambda r: (WORKLOADS.index(r["workload"]), r["devices"], r["method"] != "vmap")  # noqa: E731
    for r in sorted(records, key=order):
        print(f"| {r['workload']} | {r['method']} | {r['devices']} | {r['replicas_per_second']:.1f} | "
              f"{r['speedup_vs_vmap']:.2f} | {r['seconds']:.3f} | {r['compile_seconds']:.1f} |")
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from diffmd.io import write_json

        write_json(args.json, {"benchmark": "replicas", "machine": {"cpu_count": os.cpu_count(),
                   "platform": platform.platform()}, "records": records})
        print(f"\nwrote {args.json}")
    return records


if __name__ == "__main__":
    main()
