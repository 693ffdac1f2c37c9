"""Study machinery for examples/lj_sigma.py: train with any set of stabilisers, on many seeds.

The example fixes its choices (force cap 100, 16 starts per epoch each clipped to ±4, SGD at
2e-2). This module makes each of them a setting, for the studies that justified them
(scripts/lj_sigma_ablation.py, lj_sigma_gradients.py, lj_sigma_crossing.py), and trains from
the command line:

    .venv/bin/python scripts/lj_sigma_study.py --seeds 0 1 2 3 4 5 6 --starts 4 --clip-per-start 2
    .venv/bin/python scripts/lj_sigma_study.py --seeds 0 --force-cap 0 --starts 1 --clip-per-start 0   # the reference

With the example's physics (force cap 100, lax.map) it calls the example's own compiled
gradient function, so that it trains exactly as the example (same starts, same numbers).
Writes OUT/seeds.json (default results/lj_sigma_study/seeds.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffmd as md  # noqa: E402
import lj_sigma as example  # noqa: E402  (also turns on float64)
from diffmd.io import write_json  # noqa: E402

SIGMA_START = 0.60 / example.scale_sigma_to_dist
WINDOW = example.window


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run; the defaults are the example's."""

    n_steps: int = example.n_steps
    n_epochs: int = 20
    learning_rate: float = example.learning_rate
    starts: int = example.n_starts          # random starts per epoch, gradients averaged (reference: 1)
    force_cap: float | None = 100.0         # LJ force cap (None: off, as diffmd's default)
    min_distance: float = 0.0               # no pair closer than this in a random start
    clip: float | None = None               # clip the averaged gradient to ±clip
    clip_per_start: float | None = example.clip  # clip each start's gradient before averaging
    fixed_start: bool = False               # reuse one start every epoch (what the reference's code did)
    batch: str = "map"                      # "map" (lax.map) or "vmap" over the starts

    def stabilisers(self) -> list[str]:
        out = [f"force_cap={self.force_cap:g}"] if self.force_cap else []
        out += [f"min_distance={self.min_distance:g}"] if self.min_distance else []
        out += [f"clip={self.clip:g}"] if self.clip else []
        out += [f"clip_per_start={self.clip_per_start:g}"] if self.clip_per_start else []
        return out + ([f"starts={self.starts}"] if self.starts > 1 else [])


def final_separation(sigma, coords, velocities, cfg: Config):
    """Mean minimum separation after cfg.n_steps of one start (the example's loss, cap optional)."""
    lj = md.LennardJones(use_neighbors=True, cutoff=md.ShiftedPotentialCutoff(1.0), force_cap=cfg.force_cap)
    system = md.System(atoms=md.Atoms.uniform(example.n_atoms, mass=example.mass, sigma=sigma, epsilon=0.2),
                       pairwise_inters=(lj,), coords=coords, velocities=velocities, boundary=example.boundary,
                       neighbor_finder=example.neighbor_finder, units=md.REDUCED_UNITS)
    trajectory = md.simulate(system, example.simulator, cfg.n_steps, check=False)
    return md.mean_min_separation(trajectory.coords, example.boundary)


def loss_one(sigma, coords, velocities, cfg: Config):
    mms = final_separation(sigma, coords, velocities, cfg)
    return jnp.abs(mms - example.dist_true), mms


def over_starts(fn, cfg: Config, coords, velocities):
    """fn(coords_k, velocities_k) for every start: lax.map (sequential; the neighbor list's
    rebuild stays a real branch) or vmap (the branch becomes a select that runs every step)."""
    if cfg.batch == "vmap":
        return jax.vmap(fn)(coords, velocities)
    return jax.lax.map(lambda start: fn(*start), (coords, velocities))


@functools.lru_cache(maxsize=None)
def gradient_fn(cfg: Config):
    """jit: (σ, coords (K,N,3), velocities) → ((losses, mms), d loss_k/dσ) for every start."""
    if cfg.force_cap == 100.0 and cfg.batch == "map":
        # The example's physics: use its own compiled function, so that the numbers are the same
        # (chaos turns a different rounding into different trajectories within a few epochs).
        def example_gradients(sigma, coords, velocities):
            (losses, (mms, _)), grads = example.gradients(sigma, coords, velocities, cfg.n_steps)
            return (losses, mms), grads

        return example_gradients
    value_and_grad = jax.value_and_grad(lambda s, c, v: loss_one(s, c, v, cfg), has_aux=True)
    return jax.jit(lambda s, coords, velocities: over_starts(lambda c, v: value_and_grad(s, c, v), cfg,
                                                             coords, velocities))


def train(cfg: Config, seed: int = 0, verbose: bool = True) -> dict:
    """SGD on σ as the example's train(), with cfg's stabilisers."""
    sigma = SIGMA_START
    key = jax.random.PRNGKey(seed)
    history = {name: [] for name in ("sigma", "mms_end", "loss", "grad", "grad_per_start")}
    blew_up = None
    for epoch_n in range(1, cfg.n_epochs + 1):
        coords, velocities = example.random_starts(key if cfg.fixed_start else jax.random.fold_in(key, epoch_n),
                                                   cfg.starts, cfg.min_distance)
        (losses, mms), grads = gradient_fn(cfg)(sigma, coords, velocities)
        used = grads if cfg.clip_per_start is None else jnp.clip(grads, -cfg.clip_per_start, cfg.clip_per_start)
        grad = float(jnp.mean(used))
        if cfg.clip:
            grad = float(np.clip(grad, -cfg.clip, cfg.clip))
        loss = float(jnp.mean(losses))
        for name, value in zip(history, (sigma, float(jnp.mean(mms)), loss, grad, np.asarray(grads).tolist())):
            history[name].append(value)
        if verbose:
            print(f"Epoch {epoch_n:>2} | σ {sigma:6.3f} | Mean min sep end {history['mms_end'][-1]:6.3f} | "
                  f"Loss {loss:6.3f} | Grad {grad:6.3f}", flush=True)
        if not (math.isfinite(loss) and math.isfinite(grad)):
            blew_up = epoch_n
            break
        sigma -= grad * cfg.learning_rate
    s = float(np.mean(history["sigma"][-5:])) if blew_up is None else math.nan
    return {"seed": seed, "sigma": s, "in_window": bool(WINDOW[0] <= s <= WINDOW[1]),
            "blew_up_at_epoch": blew_up, "history": history}


def run_seeds(cfg: Config, seeds, out: Path | None = None, verbose: bool = False) -> dict:
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        r = train(cfg, seed, verbose=verbose)
        rows.append({"seed": seed, "sigma": r["sigma"], "in_window": r["in_window"],
                     "blew_up_at_epoch": r["blew_up_at_epoch"], "seconds": time.perf_counter() - t0,
                     "sigma_history": r["history"]["sigma"], "grad_history": r["history"]["grad"]})
        print(f"seed {seed}: σ (last 5 epochs) {r['sigma']:.4f} {'in' if r['in_window'] else 'OUTSIDE'} {list(WINDOW)}"
              f"{'' if r['blew_up_at_epoch'] is None else ' (blew up at epoch %d)' % r['blew_up_at_epoch']}"
              f" | {rows[-1]['seconds']:.1f} s", flush=True)
    report = {"config": dataclasses.asdict(cfg), "stabilisers": cfg.stabilisers(), "window": WINDOW,
              "n_in_window": sum(r["in_window"] for r in rows), "n_seeds": len(rows), "seeds": rows}
    print(f"{report['n_in_window']}/{len(rows)} seeds in {list(WINDOW)} with {cfg.stabilisers() or 'no stabilisers'}")
    if out is not None:
        write_json(out, report)
    return report


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    d = Config()
    p.add_argument("--epochs", type=int, default=d.n_epochs)
    p.add_argument("--steps", type=int, default=d.n_steps, help="simulation steps per start")
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--starts", type=int, default=d.starts, help="random starts per epoch (gradients averaged)")
    p.add_argument("--force-cap", type=float, default=d.force_cap, help="LJ force cap; 0 turns it off")
    p.add_argument("--min-distance", type=float, default=d.min_distance, help="starts without pairs closer than this")
    p.add_argument("--clip", type=float, default=0.0, help="clip the averaged gradient to ±CLIP (0: off)")
    p.add_argument("--clip-per-start", type=float, default=d.clip_per_start, help="clip each start's gradient (0: off)")
    p.add_argument("--fixed-start", action="store_true", help="reuse one start every epoch (the reference's code)")
    p.add_argument("--batch", choices=("map", "vmap"), default=d.batch)


def config_from_args(args) -> Config:
    return Config(n_steps=args.steps, n_epochs=args.epochs, learning_rate=args.lr, starts=args.starts,
                  force_cap=args.force_cap or None, min_distance=args.min_distance, clip=args.clip or None,
                  clip_per_start=args.clip_per_start or None, fixed_start=args.fixed_start, batch=args.batch)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=Path("results/lj_sigma_study/seeds.json"))
    add_config_arguments(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    return run_seeds(cfg, args.seeds, args.out, verbose=len(args.seeds) == 1)


if __name__ == "__main__":
    main()
