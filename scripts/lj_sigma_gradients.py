"""How noisy are exact single-start gradients in examples/lj_sigma.py? Statistics at one σ.

At σ = 0.46, above the many-start crossing (≈ 0.45, scripts/lj_sigma_crossing.py), the loss
|mean min separation − 0.5| grows with σ on average, so a single-start gradient ≤ 0 points the
wrong way. For N random starts (the example's starts, force cap 100, 250 steps) this records
each start's exact d loss/dσ and summarises them: the wrong-sign fraction, quartiles, the largest
|grad|, and how often d(mean min separation)/dσ < 0.

    .venv/bin/python scripts/lj_sigma_gradients.py --out results/lj_sigma_gradients   # 64 starts

Writes OUT/gradients.json and OUT/gradients.png (a histogram of the gradients).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import lj_sigma_study as study  # noqa: E402
from diffmd.io import save_figure, write_json  # noqa: E402


def measure(cfg: study.Config, sigma: float = 0.46, n_starts: int = 64, seed: int = 10_000) -> dict:
    """Single-start gradients at σ, computed cfg.starts at a time with the training's compiled function."""
    coords, velocities = study.example.random_starts(study.jax.random.PRNGKey(seed), n_starts, cfg.min_distance)
    t0 = time.perf_counter()
    grads, mms = [], []
    for i in range(0, n_starts, cfg.starts):
        (_, m), g = study.gradient_fn(cfg)(sigma, coords[i:i + cfg.starts], velocities[i:i + cfg.starts])
        grads.append(np.asarray(g))
        mms.append(np.asarray(m))
    grads, mms = np.concatenate(grads), np.concatenate(mms)
    finite = np.isfinite(grads)
    g = grads[finite]
    dmms = g * np.sign(mms[finite] - study.example.dist_true)  # loss = |mms − 0.5| ⇒ dmms/dσ = sign · grad
    return {
        "sigma": sigma, "n_starts": n_starts, "seed": seed, "n_nonfinite": int((~finite).sum()),
        "wrong_sign_fraction": float(np.mean(g <= 0)),
        "dmms_dsigma_negative_fraction": float(np.mean(dmms < 0)),
        "grad_mean": float(np.mean(g)), "grad_quartiles": np.percentile(g, [25, 50, 75]).tolist(),
        "grad_mean_clipped_2": float(np.mean(np.clip(g, -2, 2))), "grad_mean_clipped_4": float(np.mean(np.clip(g, -4, 4))),
        "grad_max_abs": float(np.max(np.abs(g))), "grad_fraction_abs_over_10": float(np.mean(np.abs(g) > 10)),
        "mms_end_mean": float(np.mean(mms[np.isfinite(mms)])),
        "grads": grads.tolist(), "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sigma", type=float, default=0.46)
    p.add_argument("--n", type=int, default=64, help="number of single starts")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=Path("results/lj_sigma_gradients"))
    study.add_config_arguments(p)
    args = p.parse_args(argv)
    cfg = dataclasses.replace(study.config_from_args(args), starts=min(args.starts, args.n))
    r = measure(cfg, args.sigma, args.n, args.seed)
    q = r["grad_quartiles"]
    print(f"Single-start gradients at σ = {args.sigma} ({args.n} starts, {r['n_nonfinite']} NaN): "
          f"{r['wrong_sign_fraction']:.0%} are ≤ 0 (the wrong sign above the crossing); quartiles {q[0]:.2f}, {q[1]:.2f}, {q[2]:.2f}; "
          f"{r['grad_fraction_abs_over_10']:.0%} exceed 10, the largest {r['grad_max_abs']:.3g}; mean {r['grad_mean']:.3f}, "
          f"clipped to ±2 {r['grad_mean_clipped_2']:.3f}, to ±4 {r['grad_mean_clipped_4']:.3f} ({r['seconds']:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(np.clip(r["grads"], -20, 20), bins=40)
    ax.axvline(0.0, color="purple", linestyle="--")
    ax.set_xlabel("d loss / dσ of one start (clipped to ±20 for the plot)")
    ax.set_ylabel("starts")
    ax.set_title(f"{args.n} single-start gradients at σ = {args.sigma}: {r['wrong_sign_fraction']:.0%} ≤ 0")
    save_figure(fig, args.out / "gradients.png")
    plt.close(fig)
    write_json(args.out / "gradients.json", {"config": dataclasses.asdict(cfg), **r})
    return r


if __name__ == "__main__":
    main()
