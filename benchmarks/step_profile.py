"""Where a step's time goes: the whole step, one neighbor-list build, and the effect of atom order.

LJ argon as in benchmarks/gradient_memory.py (float32), cutoff 1.0 nm switched from 0.9 nm,
CellListNeighborFinder with a 0.1 nm skin. For each N: the time per step inside `simulate`
(rebuilds excluded by timing a window right after one), one list build, the list's slots per
atom, and (--shuffle) the same fluid with its atoms in random order (gather locality).

    .venv/bin/python benchmarks/step_profile.py 1000 8000 32000 [--shuffle]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradient_memory as fluid  # noqa: E402

import diffmd as md  # noqa: E402

simulate_module = importlib.import_module("diffmd.run.simulate")


def system_for(n_atoms: int, shuffle: bool = False):
    system = fluid.make_system(n_atoms, fluid.SIGMA)
    lj = md.LennardJones(use_neighbors=True, cutoff=md.SwitchedCutoff(distance=1.0, switch_distance=0.9))
    system = eqx.tree_at(lambda s: (s.neighbor_finder, s.loggers, s.pairwise_inters), system,
                         (md.CellListNeighborFinder(1.1), {}, (lj,)))
    if shuffle:
        order = np.random.default_rng(0).permutation(n_atoms)
        system = eqx.tree_at(lambda s: (s.coords, s.velocities), system, (system.coords[order], system.velocities[order]))
    return system


def profile(n_atoms: int, shuffle: bool = False) -> dict:
    system = system_for(n_atoms, shuffle)
    capacity = simulate_module._choose_capacity(system)
    excluded = system.excluded_pairs().array
    build = jax.jit(lambda x: system.neighbor_finder.build(x, system.boundary, excluded, capacity).idx)
    jax.block_until_ready(build(system.coords))
    t0 = time.perf_counter()
    jax.block_until_ready(build(system.coords))
    build_s = time.perf_counter() - t0
    integrator = md.VelocityVerlet(fluid.DT)
    steps = 20 if n_atoms > 8000 else 100  # short: few or no rebuilds inside the window
    warm = md.simulate(system, integrator, steps)
    jax.block_until_ready(md.simulate(system, integrator, steps, start=warm.state).coords)
    t0 = time.perf_counter()
    run = md.simulate(system, integrator, steps, start=warm.state)
    jax.block_until_ready(run.coords)
    step_s = (time.perf_counter() - t0) / steps
    slots = capacity.slots
    return {"n_atoms": n_atoms, "shuffled": shuffle, "step_ms": step_s * 1e3, "build_ms": build_s * 1e3,
            "slots_per_atom": slots, "ns_per_pair_slot": step_s / (n_atoms * slots) * 1e9,
            "atom_steps_per_s": n_atoms / step_s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sizes", type=int, nargs="+")
    p.add_argument("--shuffle", action="store_true", help="also time the fluid with its atoms in random order")
    args = p.parse_args(argv)
    print("| N | atom order | step ms | one build ms | slots K | ns per pair slot | M atom-steps/s |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for shuffle in ([False, True] if args.shuffle else [False]):
            r = profile(n, shuffle)
            print(f"| {n:,} | {'shuffled' if shuffle else 'lattice'} | {r['step_ms']:.2f} | {r['build_ms']:.1f} | "
                  f"{r['slots_per_atom']} | {r['ns_per_pair_slot']:.1f} | {r['atom_steps_per_s'] / 1e6:.3f} |", flush=True)


if __name__ == "__main__":
    main()
