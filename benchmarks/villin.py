"""A protein in water, as people run it: diffmd against OpenMM's CPU platform, step for step.

The villin headpiece in TIP3P water that the openmm wheel ships (`app/data/test.pdb`, 8,867
atoms), amber14 + TIP3P, PME with a 1.0 nm cutoff (error tolerance 5e-4, OpenMM's α and grid),
bonds to hydrogen constrained, rigid water, LangevinMiddle at 300 K (γ = 1/ps, dt = 2 fs). Both
engines start from the same coordinates, minimised by OpenMM's LocalEnergyMinimizer, and the
same velocities.

Reported: steps/s and ns/day per engine and precision (OpenMM CPU: 2 threads, its mixed
precision; diffmd float32, and float64 unless --quick), the mean temperature over the run, the
potential energy at the start against OpenMM's Reference platform (float64), where a diffmd
step spends its time (direct space, reciprocal space, bonded terms, constraints, list builds),
and the gradient of a loss through 100 steps (the protein's radius of gyration with respect to
every force-field number): its time relative to the 100-step run and XLA's peak memory.

    .venv/bin/python benchmarks/villin.py --json results/villin.json
    .venv/bin/python benchmarks/villin.py --quick          # < 4 minutes

JSON (written atomically): {"benchmark", "settings", "machine", "records", "agreement",
"profile", "gradient"}; one record per engine and precision with `engine`, `precision`,
`steps_per_s`, `ns_per_day`, `temperature_mean`.
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

FILES = ("amber14-all.xml", "amber14/tip3p.xml")
SETTINGS = dict(nonbonded_method="PME", nonbonded_cutoff=1.0, ewald_error_tolerance=5e-4, constraints="HBonds",
                rigid_water=True)
DT, TEMPERATURE, FRICTION = 0.002, 300.0, 1.0  # ps, K, 1/ps
GRADIENT_STEPS = 100


def openmm_system(topology):
    from openmm import app

    return app.ForceField(*FILES).createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=SETTINGS["nonbonded_cutoff"], constraints=app.HBonds,
        rigidWater=True, ewaldErrorTolerance=SETTINGS["ewald_error_tolerance"])


def shared_start(pdb):
    """(positions (N, 3) nm, velocities (N, 3) nm/ps): OpenMM-minimised coordinates (tolerance
    10 kJ/mol/nm) and Maxwell-Boltzmann velocities at 300 K on the constraints."""
    import openmm as mm

    system = openmm_system(pdb.topology)
    context = mm.Context(system, mm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, DT),
                         mm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    context.setPositions(pdb.positions)
    mm.LocalEnergyMinimizer.minimize(context, 10.0)
    context.setVelocitiesToTemperature(TEMPERATURE, 7)
    context.applyVelocityConstraints(1e-8)
    state = context.getState(getPositions=True, getVelocities=True)
    nm, nm_ps = mm.unit.nanometer, mm.unit.nanometer / mm.unit.picosecond
    return state.getPositions(asNumpy=True).value_in_unit(nm), state.getVelocities(asNumpy=True).value_in_unit(nm_ps)


def openmm_run(topology, positions, velocities, steps: int) -> dict:
    import openmm as mm

    system = openmm_system(topology)
    integrator = mm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, DT)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    context.setPositions(positions)
    context.setVelocities(velocities)
    integrator.step(10)  # warm up
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    kb = mm.unit.MOLAR_GAS_CONSTANT_R.value_in_unit(mm.unit.kilojoule_per_mole / mm.unit.kelvin)
    temperatures, chunk = [], max(1, steps // 20)
    start = time.perf_counter()
    for _ in range(steps // chunk):
        integrator.step(chunk)
        ke = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
        temperatures.append(2 * ke / (dof * kb))
    seconds = time.perf_counter() - start
    done = chunk * (steps // chunk)
    return dict(engine="openmm", platform="CPU", precision="mixed", threads=2, steps=done,
                steps_per_s=done / seconds, ns_per_day=done / seconds * DT * 86400 / 1000,
                temperature_mean=float(np.mean(temperatures[len(temperatures) // 4:])))


def reference_energy(topology, positions) -> float:
    import openmm as mm

    context = mm.Context(openmm_system(topology), mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)


def diffmd_system(topology, positions, velocities, dtype_name: str, loggers=None):
    import equinox as eqx
    import jax.numpy as jnp

    import diffmd as md

    dtype = jnp.float32 if dtype_name == "float32" else jnp.float64
    system = md.ForceField(*FILES).create_system((topology, positions), velocities=velocities, dtype=dtype, **SETTINGS)
    if loggers:
        system = eqx.tree_at(lambda s: s.loggers, system, loggers)
    return system


def diffmd_run(topology, positions, velocities, dtype_name: str, steps: int) -> dict:
    import jax

    import diffmd as md

    every = max(1, steps // 20)
    system = diffmd_system(topology, positions, velocities, dtype_name, {"t": md.TemperatureLogger(every)})
    integrator = md.LangevinMiddle(DT, TEMPERATURE, FRICTION)
    # The timed call repeats the first one exactly (same start, key and length), which compiled
    # every configuration the run uses: a run's length and its chunks are static, so timing the
    # first call of a length measured its compilation too (stop 17's figures did).
    start = time.perf_counter()
    jax.block_until_ready(md.simulate(system, integrator, steps, key=jax.random.PRNGKey(0)).state.coords)
    first_call_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run = md.simulate(system, integrator, steps, key=jax.random.PRNGKey(0))
    jax.block_until_ready(run.state.coords)
    seconds = time.perf_counter() - start
    compile_seconds = max(0.0, first_call_seconds - seconds)
    temperatures = np.asarray(run.logs["t"])
    return dict(engine="diffmd", precision=dtype_name, steps=steps, steps_per_s=steps / seconds,
                ns_per_day=steps / seconds * DT * 86400 / 1000, compile_seconds=compile_seconds,
                temperature_mean=float(np.mean(temperatures[len(temperatures) // 4:])),
                constraint_violation=float(system.constraints.violation(run.state.coords, system.boundary)))


def best(fn, *args, repeats: int = 5) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def profile(topology, positions, velocities) -> dict:
    """Seconds per call of each part of a float32 step, each jitted on its own."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import diffmd as md

    system = diffmd_system(topology, positions, velocities, "float32")
    finder, box = system.neighbor_finder, system.boundary
    excluded = system.excluded_pairs().array
    capacity = finder.initial_capacity(system.coords, box, excluded)
    neighbors = finder.build(system.coords, box, excluded, capacity)
    only = lambda **terms: eqx.tree_at(  # noqa: E731
        lambda s: (s.pairwise_inters, s.bonded_inters, s.global_inters), system,
        (terms.get("pairwise", ()), terms.get("bonded", ()), terms.get("global_", ())))
    forces = lambda s: jax.jit(lambda c, nl: md.energy_and_forces(s, c, nl, derivatives="reverse"))  # noqa: E731
    inv_mass = (1.0 / system.atoms.mass)[:, None].astype(jnp.float32)
    c = system.constraints
    moved = system.coords + 1e-4
    parts = {
        "step, all forces": (forces(system), system.coords, neighbors),
        "direct space (pairs, 1-4, exceptions)": (forces(only(pairwise=system.pairwise_inters)), system.coords, neighbors),
        "reciprocal space (PME)": (forces(only(global_=system.global_inters)), system.coords, neighbors),
        "bonded terms": (forces(only(bonded=system.bonded_inters)), system.coords, neighbors),
        "constraints (positions + velocities)": (
            jax.jit(lambda x, v: c.velocities(c.positions(x, system.coords, inv_mass, box), v, inv_mass, box)),
            moved, system.velocities),
        "neighbor list build": (jax.jit(lambda x: finder.build(x, box, excluded, capacity)), system.coords),
    }
    return {name: best(fn, *args) for name, (fn, *args) in parts.items()}


def gradient(topology, positions, velocities) -> dict:
    """Time and XLA peak memory of d(Rg after 100 steps)/d(force-field numbers), float32."""
    import jax
    import jax.numpy as jnp

    import diffmd as md

    system = diffmd_system(topology, positions, velocities, "float32")
    protein = np.array([a.index for a in topology.atoms() if a.residue.name not in ("HOH", "NA", "CL")])
    integrator = md.LangevinMiddle(DT, TEMPERATURE, FRICTION)
    key = jax.random.PRNGKey(2)

    def radius_of_gyration(params):
        run = md.simulate(system.with_parameters(params), integrator, GRADIENT_STEPS, key=key)
        x = run.state.coords[protein]
        return jnp.sqrt(jnp.mean(jnp.sum((x - x.mean(axis=0)) ** 2, axis=1)))

    params = system.force_field.parameters
    out = {}
    for name, fn in (("forward", jax.jit(radius_of_gyration)), ("gradient", jax.jit(jax.value_and_grad(radius_of_gyration)))):
        start = time.perf_counter()
        compiled = fn.lower(params).compile()
        compile_seconds = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        peak = None if analysis is None else int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                                  + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
        out[name] = dict(seconds=best(compiled, params, repeats=2), compile_seconds=compile_seconds,
                         peak_memory_bytes=peak)
    out["gradient_over_forward"] = out["gradient"]["seconds"] / out["forward"]["seconds"]
    out["steps"] = GRADIENT_STEPS
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, float32 only, no gradient (< 4 minutes)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per engine")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    steps = args.steps or (300 if args.quick else 2000)

    import jax

    jax.config.update("jax_enable_x64", True)  # float64 where asked; the float32 system stays float32
    from openmm import app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    topology = pdb.topology
    print(f"villin in water: {topology.getNumAtoms()} atoms; minimising with OpenMM…", flush=True)
    positions, velocities = shared_start(pdb)

    import diffmd as md

    expected = reference_energy(topology, positions)
    ours = float(md.potential_energy(diffmd_system(topology, positions, velocities, "float64")))
    agreement = dict(openmm_reference_kj_mol=expected, diffmd_float64_kj_mol=ours,
                     relative_difference=abs(ours - expected) / abs(expected))
    print(f"potential energy at the start: OpenMM Reference {expected:.3f}, diffmd float64 {ours:.3f} kJ/mol "
          f"(relative difference {agreement['relative_difference']:.1e})", flush=True)

    records = [openmm_run(topology, positions, velocities, steps)]
    print(f"  openmm CPU: {records[-1]['steps_per_s']:.1f} steps/s", flush=True)
    for dtype in ("float32",) if args.quick else ("float32", "float64"):
        records.append(diffmd_run(topology, positions, velocities, dtype, steps))
        print(f"  diffmd {dtype}: {records[-1]['steps_per_s']:.1f} steps/s", flush=True)
    omm = records[0]["steps_per_s"]
    for r in records:
        r["ratio_to_openmm"] = r["steps_per_s"] / omm
    parts = profile(topology, positions, velocities)
    grad = None if args.quick else gradient(topology, positions, velocities)

    print(f"\nvillin in water, {topology.getNumAtoms()} atoms, PME {SETTINGS['nonbonded_cutoff']} nm, HBonds, rigid "
          f"water, LangevinMiddle {DT * 1000:g} fs, {steps} steps")
    print("| engine | precision | steps/s | ns/day | × OpenMM | mean T (K) |")
    print("|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['engine']} | {r['precision']} | {r['steps_per_s']:.1f} | {r['ns_per_day']:.2f} | "
              f"{r['ratio_to_openmm']:.2f} | {r['temperature_mean']:.1f} |")
    print("\nwhere a diffmd float32 step goes (each part jitted alone):")
    print("| part | ms |")
    print("|---|---|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds * 1e3:.2f} |")
    if grad:
        print(f"\nd(Rg after {GRADIENT_STEPS} steps)/d(force field): {grad['gradient']['seconds']:.1f} s, "
              f"{grad['gradient_over_forward']:.1f}× the {GRADIENT_STEPS}-step run; XLA peak memory "
              f"{(grad['gradient']['peak_memory_bytes'] or 0) / 2**20:.0f} MiB (forward "
              f"{(grad['forward']['peak_memory_bytes'] or 0) / 2**20:.0f} MiB)")
    if args.json:
        from diffmd.io import write_json

        write_json(args.json, {"benchmark": "villin", "settings": {**SETTINGS, "files": FILES, "dt_ps": DT,
                                                                    "temperature_k": TEMPERATURE,
                                                                    "friction_per_ps": FRICTION, "steps": steps},
                               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "records": records, "agreement": agreement, "profile_seconds": parts,
                               "gradient": grad})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
