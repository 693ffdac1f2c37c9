"""How the gradient of the LJ σ example grows with the horizon — and what tames it.

The reference warns that "exploding gradients prove a problem when using the velocity Verlet
integrator in the NVE ensemble", and used a friction thermostat that "presumably decays the
gradients". This script measures it: |d mms/dσ| (mms = mean minimum separation at the end of the
run, the reference's observable) for horizons of 10…250 steps over 8 random starts, for

* NVE (velocity Verlet, no thermostat),
* the reference's FrictionThermostat(0.95),
* NVE with truncated backpropagation (gradients flow back at most 25 steps),
* NVE with forward mode (the same exact gradient as NVE, constant memory).

Same system as examples/lj_sigma.py: 50 atoms, box 3, mass 10, ε 0.2, σ 0.46, T 3, dt 0.05,
reduced units, LennardJones with the reference's force cap (100), neighbor list cutoff 1.5.

    python examples/gradient_horizon.py --out results/gradient_horizon

Writes OUT/summary.json and OUT/gradient_horizon.png.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import diffmd as md
from diffmd.diagnostics import gradient_growth, plot_gradient_growth

from _cli import example_parser, write_summary

N_ATOMS, BOX, MASS, EPSILON, TEMPERATURE, DT, SIGMA = 50, 3.0, 10.0, 0.2, 3.0, 0.05, 0.46
HORIZONS = [10, 25, 50, 100, 150, 250]
boundary = md.CubicBoundary(BOX)


def start(key):
    k1, k2 = jax.random.split(key)
    coords = jax.random.uniform(k1, (N_ATOMS, 3)) * BOX
    velocities = md.random_velocities(k2, jnp.full(N_ATOMS, MASS), TEMPERATURE, md.REDUCED_UNITS)
    return coords, velocities


def make_loss(coupling, **simulate_options):
    def loss(sigma, n_steps, key):
        coords, velocities = start(key)
        system = md.System(
            atoms=md.Atoms.uniform(N_ATOMS, mass=MASS, sigma=sigma, epsilon=EPSILON),
            coords=coords, velocities=velocities, boundary=boundary, units=md.REDUCED_UNITS,
            pairwise_inters=[md.LennardJones(use_neighbors=True, cutoff=md.PlainCutoff(1.0), force_cap=100.0)],
            neighbor_finder=md.DistanceNeighborFinder(cutoff=1.5, every=10, capacity=N_ATOMS - 1),
        )
        trajectory = md.simulate(system, md.VelocityVerlet(DT, coupling=coupling), n_steps, **simulate_options)
        return md.mean_min_separation(trajectory.coords, boundary)
    return loss


def forward_mode_growth(loss, horizons, keys):
    """The same measurement with jax.jvp (one tangent along σ) and grad_mode="forward"."""
    norms = np.zeros((len(horizons), len(keys)))
    for h, n in enumerate(horizons):
        jvp = jax.jit(lambda s, k, n=n: jax.jvp(lambda x: loss(x, n, k), (s,), (1.0,))[1])
        norms[h] = [abs(float(jvp(SIGMA, key))) for key in keys]
    geometric = np.exp(np.mean(np.log(norms), axis=1))
    return {"horizons": horizons, "norms": norms, "median": np.median(norms, axis=1), "geometric_mean": geometric,
            "growth_rate": float(np.polyfit(horizons, np.log(geometric), 1)[0])}


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/gradient_horizon")
    parser.add_argument("--starts", type=int, default=8)
    args = parser.parse_args(argv)
    keys = list(jax.random.split(jax.random.PRNGKey(args.seed), args.starts))
    setups = {
        "NVE": (make_loss(()), "reverse"),
        "FrictionThermostat(0.95)": (make_loss(md.FrictionThermostat(0.95)), "reverse"),
        "NVE, Truncate(window=25)": (make_loss((), truncate=md.Truncate(window=25)), "reverse"),
        "NVE, forward mode": (make_loss((), grad_mode="forward"), "forward"),
    }
    results = {}
    for label, (loss, mode) in setups.items():
        t0 = time.perf_counter()
        results[label] = (gradient_growth(loss, SIGMA, HORIZONS, keys=keys) if mode == "reverse"
                          else forward_mode_growth(loss, HORIZONS, keys))
        r = results[label]
        print(f"{label:26s} | " + " | ".join(f"{n:>3d}: {g:9.3g}" for n, g in zip(HORIZONS, r["geometric_mean"]))
              + f" | rate {r['growth_rate']:+.4f}/step | {time.perf_counter() - t0:5.1f} s", flush=True)
    plot_gradient_growth({k: v for k, v in results.items() if "forward" not in k}, args.out / "gradient_horizon.png",
                         title="LJ gas: |d mms/dσ| against horizon (8 starts)")
    summary = {"seed": args.seed, "sigma": SIGMA, "horizons": HORIZONS, "starts": args.starts,
               "results": {k: {"geometric_mean": v["geometric_mean"], "median": v["median"],
                               "growth_rate_per_step": v["growth_rate"], "norms": v["norms"]}
                           for k, v in results.items()}}
    write_summary(args.out, summary)
    return summary


if __name__ == "__main__":
    main()
