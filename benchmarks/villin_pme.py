"""One energy-and-forces evaluation of villin in water with PME: diffmd against OpenMM (CPU).

The villin headpiece (N68H) in TIP3P water that the openmm wheel ships (`app/data/test.pdb`,
8,867 atoms, box 4.92 × 4.60 × 3.89 nm), amber14 + TIP3P, PME with a 0.9 nm cutoff, error
tolerance 5e-4 (OpenMM's default, so α and the grid are OpenMM's), dispersion correction, no
constraints, flexible water (diffmd has no constraints yet).

diffmd: `energy_and_forces(system, coords, neighbors, derivatives="reverse")` jitted — what a run
evaluates each step — with a neighbor list built once (float32 and float64). OpenMM: CPU
platform, 2 threads, mixed precision, timed as `integrator.step(k)` of a VerletIntegrator with
dt = 1e-9 ps (positions do not move: no list rebuild), one force evaluation per step; its
Reference platform gives the energies the run checks agreement against.

    .venv/bin/python benchmarks/villin_pme.py --json results/villin_pme.json

JSON (written atomically): {"benchmark", "settings", "machine", "records"}; a record per engine
and dtype with `engine`, `dtype`, `seconds` (per evaluation), `ratio_to_openmm_cpu`, and the
potential energy it computed (kJ/mol).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.append(str(ROOT / "src"))

SETTINGS = dict(nonbonded_method="PME", nonbonded_cutoff=0.9, ewald_error_tolerance=5e-4, constraints=None,
                rigid_water=False, dispersion_correction=True)
FILES = ("amber14-all.xml", "amber14/tip3p.xml")


def best_time(call, repeats: int, target_seconds: float) -> float:
    """Best per-call time over `repeats` rounds of as many calls as fill `target_seconds`."""
    call()
    start = time.perf_counter()
    call()
    per = max(time.perf_counter() - start, 1e-6)
    n = max(1, int(target_seconds / per))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def diffmd_time(pdb, dtype_name: str, repeats: int, target: float):
    import jax

    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import diffmd as md

    dtype = jnp.float32 if dtype_name == "float32" else jnp.float64
    system = md.ForceField(*FILES).create_system(pdb, dtype=dtype, **SETTINGS)
    finder, boundary = system.neighbor_finder, system.boundary
    excluded = system.excluded_pairs().array
    neighbors = finder.build(system.coords, boundary, excluded, finder.initial_capacity(system.coords, boundary,
                                                                                         excluded))
    evaluate = jax.jit(lambda s, c, nl: md.energy_and_forces(s, c, nl, derivatives="reverse"))
    start = time.perf_counter()
    energy, forces = jax.block_until_ready(evaluate(system, system.coords, neighbors))
    compile_seconds = time.perf_counter() - start
    seconds = best_time(lambda: jax.block_until_ready(evaluate(system, system.coords, neighbors)), repeats, target)
    return seconds, float(energy), compile_seconds


def openmm_time(pdb, repeats: int, target: float):
    import openmm as mm
    from openmm import app

    system = app.ForceField(*FILES).createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=SETTINGS["nonbonded_cutoff"], constraints=None,
        rigidWater=False, ewaldErrorTolerance=SETTINGS["ewald_error_tolerance"])
    energies = {}
    for name, properties in (("Reference", {}), ("CPU", {"Threads": "2"})):
        integrator = mm.VerletIntegrator(1e-9)
        context = mm.Context(system, integrator, mm.Platform.getPlatformByName(name), properties)
        context.setPositions(pdb.positions)
        energies[name] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            mm.unit.kilojoule_per_mole)
    seconds = best_time(lambda: integrator.step(1), repeats, target)
    return seconds, energies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed window per round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from openmm import app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    records = []
    omm_seconds, energies = openmm_time(pdb, args.repeats, args.seconds)
    records.append(dict(engine="openmm", platform="CPU", dtype="mixed", seconds=omm_seconds,
                        ratio_to_openmm_cpu=1.0, energy_kj_mol=energies["CPU"]))
    for dtype in ("float32", "float64"):
        seconds, energy, compile_seconds = diffmd_time(pdb, dtype, args.repeats, args.seconds)
        records.append(dict(engine="diffmd", dtype=dtype, seconds=seconds, ratio_to_openmm_cpu=seconds / omm_seconds,
                            energy_kj_mol=energy, compile_seconds=compile_seconds,
                            energy_rel_error_vs_reference=abs(energy - energies["Reference"]) / abs(energies["Reference"])))
    print(f"villin in water, {pdb.topology.getNumAtoms()} atoms, PME (cutoff {SETTINGS['nonbonded_cutoff']} nm), "
          f"OpenMM Reference energy {energies['Reference']:.3f} kJ/mol")
    print("| engine | precision | ms per energy + forces | × OpenMM CPU | energy kJ/mol |")
    print("|---|---|---|---|---|")
    for r in records:
        print(f"| {r['engine']} | {r['dtype']} | {1e3 * r['seconds']:.2f} | {r['ratio_to_openmm_cpu']:.2f} | "
              f"{r['energy_kj_mol']:.3f} |")
    if args.json:
        from diffmd.io import write_json

        write_json(args.json, {"benchmark": "villin_pme", "settings": {**SETTINGS, "files": FILES, "threads": 2},
                               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "records": records})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
