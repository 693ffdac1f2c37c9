"""A protein in water: villin minimised, equilibrated and run under Langevin at 300 K, then the
gradient of its radius of gyration with respect to a force-field number.

What it does. The villin headpiece in TIP3P water that the openmm wheel ships
(`app/data/test.pdb`, 8,867 atoms) with amber14 + TIP3P: PME (1.0 nm), bonds to hydrogen
constrained, rigid water, float32 — the setup of benchmarks/villin.py. `diffmd.minimize` relaxes
the structure (OpenMM's criterion: RMS force below 10 kJ/mol/nm), `diffmd.LangevinMiddle`
(2 fs, γ = 1/ps) equilibrates it from 300 K velocities and runs it on, continuing each chunk
from the last one's state (`start=previous.state`) and printing a status line per chunk. Then
reverse mode through 50 steps gives d Rg / d(every force-field number) in one pass; the example
reports the derivative for the charge of ALA's Cα in the residue templates and for the largest
torsion k, and checks the charge's against a central finite difference of the same 50 steps
(the noise fixed by the key).

Run:  .venv/bin/python examples/protein_in_water.py --out results/protein_in_water
      .venv/bin/python examples/protein_in_water.py --quick --out /tmp/protein_in_water   (tests)

Writes OUT/energies.png (potential, kinetic and total energy against time), OUT/temperature.png
and OUT/summary.json (the minimisation, the run's mean temperature and speed, the gradients).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from _cli import example_parser, write_summary

FILES = ("amber14-all.xml", "amber14/tip3p.xml")
DT, TEMPERATURE, FRICTION = 0.002, 300.0, 1.0  # ps, K, 1/ps


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/protein_in_water")
    parser.add_argument("--equilibrate", type=int, default=2500, help="steps of equilibration (5 ps)")
    parser.add_argument("--steps", type=int, default=5000, help="steps of the run after it (10 ps)")
    parser.add_argument("--quick", action="store_true", help="a few hundred steps (for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.equilibrate, args.steps = 100, 100
    args.out.mkdir(parents=True, exist_ok=True)

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from openmm import app

    import diffmd as md
    from diffmd.plot import plot_curve

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    forcefield = md.ForceField(*FILES)
    system = forcefield.create_system(pdb, nonbonded_method="PME", nonbonded_cutoff=1.0, constraints="HBonds",
                                      rigid_water=True, dtype=jnp.float32)
    print(f"villin in water: {system.n_atoms} atoms, {len(system.constraints.pairs)} constraints, "
          f"{system.degrees_of_freedom} degrees of freedom", flush=True)

    start = time.perf_counter()
    before = float(md.potential_energy(system))
    system = md.minimize(system, tolerance=10.0)
    after = float(md.potential_energy(system))
    print(f"minimised: {before:.0f} → {after:.0f} kJ/mol in {time.perf_counter() - start:.0f} s", flush=True)

    velocities = md.random_velocities(jax.random.PRNGKey(args.seed), system.atoms.mass, TEMPERATURE,
                                      dtype=jnp.float32)
    every = 50 if not args.quick else 10
    loggers = {"pe": md.PotentialEnergyLogger(every), "ke": md.KineticEnergyLogger(every),
               "t": md.TemperatureLogger(every)}
    system = eqx.tree_at(lambda s: (s.velocities, s.loggers), system, (velocities, loggers),
                         is_leaf=lambda x: x is None)
    integrator = md.LangevinMiddle(DT, TEMPERATURE, FRICTION)
    chunk = 500 if not args.quick else 50
    state, logs, key = None, {name: [] for name in loggers}, jax.random.PRNGKey(args.seed + 1)
    total = args.equilibrate + args.steps
    run_start = time.perf_counter()
    for done in range(0, total, chunk):
        key, sub = jax.random.split(key)
        tick = time.perf_counter()
        run = md.simulate(system, integrator, chunk, key=sub, start=state)
        state = run.state
        for name in loggers:
            logs[name].append(np.asarray(run.logs[name]))
        seconds = time.perf_counter() - tick
        print(f"  {(done + chunk) * DT:6.1f} ps | T {float(np.mean(run.logs['t'])):6.1f} K | "
              f"E_pot {float(run.logs['pe'][-1]):10.0f} kJ/mol | {chunk * DT * 86400 / 1000 / seconds:5.2f} ns/day",
              flush=True)
    wall = time.perf_counter() - run_start
    logs = {name: np.concatenate(values) for name, values in logs.items()}
    times = (np.arange(len(logs["t"])) + 1) * every * DT
    production = times > args.equilibrate * DT
    plot_curve(times, logs["pe"] + logs["ke"], args.out / "energies.png", "time (ps)", "total energy (kJ/mol)",
               title="villin in water: potential + kinetic energy (LangevinMiddle, 300 K)")
    plot_curve(times, logs["t"], args.out / "temperature.png", "time (ps)", "temperature (K)",
               title="villin in water: temperature", hline=TEMPERATURE)

    # d Rg / d(force field) through 50 steps from the run's end, noise fixed by the key
    protein = np.array([a.index for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "NA", "CL")])
    continued = eqx.tree_at(lambda s: (s.coords, s.velocities, s.loggers), system,
                            (state.coords, state.velocities, {}))
    grad_key = jax.random.PRNGKey(args.seed + 2)

    def radius_of_gyration(params):
        end = md.simulate(continued.with_parameters(params), integrator, 50, key=grad_key).state.coords[protein]
        return jnp.sqrt(jnp.mean(jnp.sum((end - end.mean(axis=0)) ** 2, axis=1)))

    params = continued.force_field.parameters
    tick = time.perf_counter()
    rg, grads = jax.jit(jax.value_and_grad(radius_of_gyration))(params)
    grad_seconds = time.perf_counter() - tick
    ca = forcefield.labels["Residues"].index("ALA:CA")
    torsion = int(np.argmax(np.abs(np.asarray(grads["PeriodicTorsionForce"]["k"]))))
    d_charge = float(grads["Residues"]["charge"][ca])
    d_torsion = float(grads["PeriodicTorsionForce"]["k"][torsion])
    value = jax.jit(radius_of_gyration)
    h = 1e-2
    charges = params["Residues"]["charge"]
    shifted = [float(value({**params, "Residues": {**params["Residues"], "charge": charges.at[ca].add(s)}}))
               for s in (h, -h)]
    fd_charge = (shifted[0] - shifted[1]) / (2 * h)
    print(f"Rg after 50 more steps {float(rg):.4f} nm; dRg/dq(ALA:CA) {d_charge:.4e} nm/e "
          f"(central difference {fd_charge:.4e}); dRg/dk({forcefield.labels['PeriodicTorsionForce'][torsion]}) "
          f"{d_torsion:.4e} nm·mol/kJ; all {sum(np.size(v) for v in jax.tree_util.tree_leaves(grads))} "
          f"derivatives in {grad_seconds:.0f} s", flush=True)

    summary = {"seed": args.seed, "n_atoms": system.n_atoms, "minimised_kj_mol": [before, after],
               "mean_temperature_k": float(np.mean(logs["t"][production])) if production.any() else None,
               "ns_per_day": total * DT * 86400 / 1000 / wall, "rg_nm": float(rg),
               "d_rg_d_charge_ala_ca": d_charge, "d_rg_d_charge_central_difference": fd_charge,
               "d_rg_d_torsion_k": d_torsion, "torsion_entry": forcefield.labels["PeriodicTorsionForce"][torsion],
               "gradient_seconds": grad_seconds}
    write_summary(args.out, summary)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
