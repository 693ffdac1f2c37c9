"""Time and peak memory of gradients through long simulations, per gradient mode.

An LJ argon fluid (σ 0.34 nm, ε 0.996 kJ/mol, m 39.948 amu, 21 atoms/nm³, cutoff 1.0 nm with a
shifted potential, a neighbor list with a 0.2 nm skin rebuilt when an atom has moved half of it,
dt 2 fs, NVE velocity Verlet, float32) runs T steps from a jittered lattice. The loss is the mean
of the potential energy per atom logged every 10 steps, differentiated with respect to the
atoms' σ (all-pairs neighbor builds up to 4,000 atoms, cell lists beyond). For each mode and T:

- `forward`      the simulation alone (value of the loss, no derivative): the baseline;
- `reverse`      jax.value_and_grad with grad_mode="reverse" (plain scan: memory ∝ T);
- `checkpointed` jax.value_and_grad with grad_mode="checkpointed" (segments of ⌈√T⌉ steps);
- `forward_mode` jax.jvp with one tangent (dσ = 1), grad_mode="forward".

Reported: seconds per run (best of --repeats, after compiling), the ratio to `forward` at the
same T, compile seconds, XLA's compiled memory analysis (arguments + outputs + temporaries) and
the process's max RSS. Each mode runs in its own process (T ascending) so that max RSS is that
mode's own; `peak_memory_bytes` is XLA's figure (what the program needs), `max_rss_bytes` the
process's (including JAX itself, ~0.3–0.5 GB).

    .venv/bin/python benchmarks/gradient_memory.py                 # N = 1000, T = 250, 1000, 4000
    .venv/bin/python benchmarks/gradient_memory.py --quick         # N = 1000, T = 50, 200 (< 2 min)
    .venv/bin/python benchmarks/gradient_memory.py --json results/gradient_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("forward", "reverse", "checkpointed", "forward_mode")
DENSITY = 21.0  # atoms per nm³
SIGMA, EPSILON, MASS = 0.34, 0.996, 39.948
CUTOFF, SKIN, DT, LOG_EVERY = 1.0, 0.2, 0.002, 10


def make_system(n_atoms: int, sigma):
    """The argon fluid on a jittered simple-cubic lattice (float32)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import diffmd as md

    side = (n_atoms / DENSITY) ** (1 / 3)
    m = int(np.ceil(n_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    coords = (grid + 0.5) * (side / m) + np.random.default_rng(0).uniform(-0.02, 0.02, (n_atoms, 3))
    atoms = md.Atoms.uniform(n_atoms, mass=MASS, sigma=sigma, epsilon=EPSILON, dtype=jnp.float32)
    velocities = md.random_velocities(jax.random.PRNGKey(1), atoms.mass, 120.0, md.OPENMM_UNITS, dtype=jnp.float32)
    return md.System(
        atoms=atoms,
        coords=jnp.asarray(coords, jnp.float32),
        velocities=velocities,
        boundary=md.CubicBoundary(jnp.float32(side)),
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedPotentialCutoff(CUTOFF)),),
        # all pairs is the faster build up to a few thousand atoms; cells beyond
        neighbor_finder=(md.DistanceNeighborFinder if n_atoms <= 4000 else md.CellListNeighborFinder)(cutoff=CUTOFF + SKIN),
        loggers={"pe": md.PotentialEnergyLogger(LOG_EVERY)},
    )


def make_function(mode: str, n_atoms: int, n_steps: int):
    """(jitted function of σ, its argument) for one mode."""
    import jax
    import jax.numpy as jnp

    import diffmd as md

    import equinox as eqx

    integrator = md.VelocityVerlet(DT)
    base = make_system(n_atoms, SIGMA)  # built outside the trace: concrete coordinates size the list
    grad_mode = {"forward": "reverse", "reverse": "reverse", "checkpointed": "checkpointed",
                 "forward_mode": "forward"}[mode]

    def loss(sigma):
        atoms = md.Atoms.uniform(n_atoms, mass=MASS, sigma=sigma, epsilon=EPSILON, dtype=jnp.float32)
        system = eqx.tree_at(lambda s: s.atoms, base, atoms)
        trajectory = md.simulate(system, integrator, n_steps, grad_mode=grad_mode)
        return jnp.mean(trajectory.logs["pe"]) / n_atoms

    if mode == "forward":
        fn = loss
    elif mode == "forward_mode":
        fn = lambda s: jax.jvp(loss, (s,), (jnp.ones_like(s),))  # noqa: E731
    else:
        fn = jax.value_and_grad(loss)
    return jax.jit(fn), jnp.float32(SIGMA)


def run_mode(mode: str, n_atoms: int, steps: list[int], repeats: int) -> list[dict]:
    """Measure one mode for every T (ascending), in this process."""
    import jax

    records = []
    for n_steps in sorted(steps):
        fn, arg = make_function(mode, n_atoms, n_steps)
        t0 = time.perf_counter()
        compiled = fn.lower(arg).compile()
        compile_s = time.perf_counter() - t0
        analysis = compiled.memory_analysis()
        xla_bytes = None
        if analysis is not None:
            xla_bytes = int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                            + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
        times, value = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            value = jax.block_until_ready(compiled(arg))
            times.append(time.perf_counter() - t0)
        flat = [float(v) for v in jax.tree_util.tree_leaves(value)]
        records.append({
            "mode": mode, "n_atoms": n_atoms, "n_steps": n_steps, "seconds": min(times),
            "compile_seconds": compile_s, "peak_memory_bytes": xla_bytes,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loss": flat[0], "derivative": flat[1] if len(flat) > 1 else None,
        })
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def _child(args) -> None:
    records = run_mode(args.child, args.atoms, args.steps, args.repeats)
    print("RESULT " + json.dumps(records), flush=True)


def _run_child(mode: str, args) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", mode, "--atoms", str(args.atoms), "--repeats", str(args.repeats),
           "--steps", *map(str, args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark of mode {mode} failed:\n{out.stderr[-3000:]}")


def _fmt_bytes(b) -> str:
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--atoms", type=int, default=1000)
    p.add_argument("--steps", type=int, nargs="+", default=None, help="T values (default 250 1000 4000)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--repeats", type=int, default=2, help="timed runs per case (the best is kept)")
    p.add_argument("--quick", action="store_true", help="T = 50 and 200 only (under 2 minutes)")
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    p.add_argument("--child", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = [50, 200] if args.quick else [250, 1000, 4000]
    if args.quick:
        args.repeats = 1
    if args.child:
        return _child(args)
    modes = ["forward"] + [m for m in args.modes if m != "forward"]
    records = []
    t0 = time.perf_counter()
    for mode in modes:
        print(f"measuring {mode} (T = {', '.join(map(str, args.steps))}) ...", flush=True)
        records += _run_child(mode, args)
    base = {r["n_steps"]: r["seconds"] for r in records if r["mode"] == "forward"}
    for r in records:
        r["time_ratio_to_forward"] = r["seconds"] / base[r["n_steps"]]

    print(f"\nGradient cost, LJ fluid N = {args.atoms}, float32, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores ({time.perf_counter() - t0:.0f} s in all)\n")
    print("| mode | T | s | × forward | compile s | XLA peak | max RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(records, key=lambda r: (modes.index(r["mode"]), r["n_steps"])):
        print(f"| {r['mode']} | {r['n_steps']} | {r['seconds']:.2f} | {r['time_ratio_to_forward']:.2f} | "
              f"{r['compile_seconds']:.1f} | {_fmt_bytes(r['peak_memory_bytes'])} | {_fmt_bytes(r['max_rss_bytes'])} |")
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from diffmd.io import write_json

        write_json(args.json, {"benchmark": "gradient_memory", "machine": {"cpu_count": os.cpu_count(),
                   "platform": platform.platform()}, "records": records})
        print(f"\nwrote {args.json}")
    return records


if __name__ == "__main__":
    main()
