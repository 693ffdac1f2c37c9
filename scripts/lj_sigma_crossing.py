"""Where does examples/lj_sigma.py's σ belong? The many-start mean of the final mean minimum
separation against σ, and the σ where it crosses 0.5 (forward simulations only).

For each σ of a grid the same N random starts (the example's: force cap 100, 250 steps) are
run and their final mean minimum separations averaged; the crossing of 0.5 is interpolated
linearly. This is the target the training's averaged σ should reach (rather than the
pair-minimum value 0.5/2^(1/6) = 0.445 that the reference compares with).

    .venv/bin/python scripts/lj_sigma_crossing.py --out results/lj_sigma_crossing      # 64 starts per σ

Writes OUT/crossing.json (`sigma_crossing`) and OUT/crossing.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

import lj_sigma_study as study
from diffmd.io import write_json
from diffmd.plot import plot_curve

jax, jnp = study.jax, study.jnp


def measure(cfg: study.Config, sigmas, n_starts: int = 64, seed: int = 20_000) -> dict:
    coords, velocities = study.example.random_starts(jax.random.PRNGKey(seed), n_starts, cfg.min_distance)
    forward = jax.jit(lambda s, c, v: study.over_starts(lambda cc, vv: study.final_separation(s, cc, vv, cfg),
                                                        cfg, c, v))
    t0 = time.perf_counter()
    means, sems, nonfinite = [], [], []
    for s in sigmas:
        mms = np.asarray(forward(jnp.float64(s), coords, velocities))
        good = mms[np.isfinite(mms)]
        nonfinite.append(int(len(mms) - len(good)))
        means.append(float(np.mean(good)))
        sems.append(float(np.std(good, ddof=1) / np.sqrt(len(good))) if len(good) > 1 else float("nan"))
    m, target, crossing = np.asarray(means), study.example.dist_true, float("nan")
    for i in range(len(m) - 1):
        if (m[i] - target) * (m[i + 1] - target) <= 0 and m[i] != m[i + 1]:
            crossing = float(sigmas[i] + (target - m[i]) * (sigmas[i + 1] - sigmas[i]) / (m[i + 1] - m[i]))
            break
    return {"n_starts": n_starts, "seed": seed, "sigmas": [float(s) for s in sigmas], "mms_end_mean": means,
            "mms_end_sem": sems, "n_nonfinite": nonfinite, "sigma_crossing": crossing,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="starts per σ")
    p.add_argument("--sigmas", type=float, nargs="+", default=np.round(np.arange(0.435, 0.4701, 0.005), 4).tolist())
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=Path("results/lj_sigma_crossing"))
    study.add_config_arguments(p)
    args = p.parse_args(argv)
    cfg = study.config_from_args(args)
    r = measure(cfg, args.sigmas, args.n, args.seed)
    for s, mean, sem in zip(r["sigmas"], r["mms_end_mean"], r["mms_end_sem"]):
        print(f"σ {s:.4f} | mean min sep end {mean:.4f} ± {sem:.4f}")
    print(f"The mean over {args.n} starts crosses 0.5 at σ = {r['sigma_crossing']:.4f} ({r['seconds']:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curve(r["sigmas"], r["mms_end_mean"], args.out / "crossing.png", "σ",
               "mean min separation at the end (mean over starts)",
               title=f"{args.n} starts per σ: crosses 0.5 at σ = {r['sigma_crossing']:.4f}",
               hline=study.example.dist_true, vline=r["sigma_crossing"])
    write_json(args.out / "crossing.json", {"config": dataclasses.asdict(cfg), **r})
    return r


if __name__ == "__main__":
    main()
