"""Neural-network bond over many seeds: the distribution of the trained mean distance.

Runs examples/nn_bond.py's training (20 epochs by default) for seeds 0, 1, …, N−1 — each seed
draws the network's initial weights — and writes OUT/seeds.json with, per seed, the final mean
distance (trained network), the last printed one, the number of hidden ReLUs alive at the start,
and whether |mean distance − 1| ≤ 0.05; plus summary statistics, and OUT/summary.json (the same
statistics). One line per seed is printed.

    python examples/nn_bond_seeds.py --seeds 20 --out results/nn_bond_seeds
"""

from __future__ import annotations

import time

import numpy as np

import nn_bond
from _cli import example_parser, write_summary
from diffmd.io import write_json

tolerance = 0.05


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/nn_bond_seeds")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds, starting at --seed (default 20)")
    parser.add_argument("--epochs", type=int, default=nn_bond.n_epochs,
                        help=f"training epochs per seed (default {nn_bond.n_epochs})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        t0 = time.perf_counter()
        model0, _, history, final_dist, final_loss = nn_bond.run(seed, args.epochs, verbose=False)
        row = {
            "seed": seed,
            "mean_distance": final_dist,
            "final_loss": final_loss,
            "last_printed_dist": history[-1]["dist"],
            "first_printed_dist": history[0]["dist"],
            "alive_hidden_units_at_start": nn_bond.alive_hidden_units(model0),
            "passed": bool(abs(final_dist - nn_bond.dist_true) <= tolerance),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(f"Seed {seed:>3} | alive ReLUs {row['alive_hidden_units_at_start']} | Dist start "
              f"{row['first_printed_dist']:6.3f} | Dist end {final_dist:6.3f} | Loss {final_loss:6.3f} | "
              f"{'ok' if row['passed'] else 'FAIL'}", flush=True)
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
