"""Neural-network bond over many seeds: the distribution of the trained mean distance, and what
the network learns.

Runs examples/nn_bond.py's training (20 epochs by default) for seeds 0, 1, …, N−1 — each seed
draws the network's initial weights — and writes OUT/seeds.json with, per seed, the final mean
distance (trained network), the last printed one, the number of hidden ReLUs alive at the start,
whether |mean distance − 1| ≤ 0.05, the trained network's output (the bond force) for
r = 0.4…1.2 and the mean distance after twice the steps (is it a bond with an equilibrium
length?); plus summary statistics, and OUT/summary.json (the same statistics). One line per seed.

    python examples/nn_bond_seeds.py --seeds 20 --out results/nn_bond_seeds
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import diffmd as md
import nn_bond
from _cli import example_parser, write_summary
from diffmd.io import write_json

tolerance = 0.05
n_epochs = 20


def alive_hidden_units(model) -> int:
    """Hidden ReLUs that are active somewhere on distances in (0, 2] (pre-activation w·r + b > 0)."""
    layer = model.layers[0]
    w, b = np.asarray(layer.weight[:, 0]), np.asarray(layer.bias)
    return int(np.sum((w * 2.0 + b > 0) | (b > 0)))


loss = eqx.filter_jit(nn_bond.loss)


def run(seed: int, epochs: int = n_epochs, verbose: bool = True):
    """Initialise the network from `seed`, train it; returns (initial model, trained model, history, final
    mean distance, final loss), both measured with the trained network."""
    model0 = nn_bond.flux_chain(jax.random.PRNGKey(seed))
    model, history = nn_bond.train(model0, epochs, verbose)
    final_loss, final_dist = (float(v) for v in loss(model))
    return model0, model, history, final_dist, final_loss


@eqx.filter_jit
def mean_distance_after(model, n_steps):
    c = md.simulate(nn_bond.make_system(model), nn_bond.integrator, n_steps).coords
    b = nn_bond.boundary
    return (jnp.linalg.norm(md.vector(c[0], c[1], b)) + jnp.linalg.norm(md.vector(c[1], c[2], b)) +
            jnp.linalg.norm(md.vector(c[2], c[0], b))) / 3


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/nn_bond_seeds")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds, starting at --seed (default 20)")
    parser.add_argument("--epochs", type=int, default=n_epochs, help=f"training epochs per seed (default {n_epochs})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        t0 = time.perf_counter()
        model0, model, history, final_dist, final_loss = run(seed, args.epochs, verbose=False)
        force = np.asarray(jax.vmap(model)(jnp.linspace(0.4, 1.2, 9, dtype=nn_bond.dtype)[:, None])[:, 0])
        row = {
            "seed": seed,
            "mean_distance": final_dist,
            "final_loss": final_loss,
            "last_printed_dist": history[-1]["dist"],
            "first_printed_dist": history[0]["dist"],
            "alive_hidden_units_at_start": alive_hidden_units(model0),
            "network_output_0.4_to_1.2": [float(force.min()), float(force.max())],
            "mean_distance_at_double_steps": float(mean_distance_after(model, 2 * nn_bond.n_steps)),
            "passed": bool(abs(final_dist - nn_bond.dist_true) <= tolerance),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(f"Seed {seed:>3} | alive ReLUs {row['alive_hidden_units_at_start']} | Dist start "
              f"{row['first_printed_dist']:6.3f} | Dist end {final_dist:6.3f} | Loss {final_loss:6.3f} | "
              f"{'ok' if row['passed'] else 'FAIL'} | model(0.4…1.2) {force.min():.2f}…{force.max():.2f} | "
              f"Dist after {2 * nn_bond.n_steps} steps {row['mean_distance_at_double_steps']:.3f}", flush=True)
    dists = np.array([r["mean_distance"] for r in rows])
    stats = {
        "n_seeds": len(rows),
        "n_epochs": args.epochs,
        "tolerance": tolerance,
        "n_passed": int(sum(r["passed"] for r in rows)),
        "failed_seeds": [r["seed"] for r in rows if not r["passed"]],
        "mean_distance_mean": float(dists.mean()),
        "mean_distance_std": float(dists.std()),
        "mean_distance_min": float(dists.min()),
        "mean_distance_median": float(np.median(dists)),
        "mean_distance_max": float(dists.max()),
        "abs_error_max": float(np.max(np.abs(dists - nn_bond.dist_true))),
        "network_output_0.4_to_1.2_range": [min(r["network_output_0.4_to_1.2"][0] for r in rows),
                                            max(r["network_output_0.4_to_1.2"][1] for r in rows)],
        "mean_distance_at_double_steps_median": float(np.median([r["mean_distance_at_double_steps"] for r in rows])),
        "runtime_s": time.perf_counter() - start,
    }
    print(f"{stats['n_passed']}/{stats['n_seeds']} seeds within {tolerance} of {nn_bond.dist_true}; mean distance "
          f"min {stats['mean_distance_min']:.3f} median {stats['mean_distance_median']:.3f} "
          f"max {stats['mean_distance_max']:.3f} ({stats['runtime_s']:.1f} s)", flush=True)
    write_json(args.out / "seeds.json", {"stats": stats, "seeds": rows})
    write_summary(args.out, {"example": "nn_bond_seeds", "first_seed": args.seed, **stats})
    return {"stats": stats, "seeds": rows}


if __name__ == "__main__":
    main()
