"""Diagnosing exploding gradients: how does the gradient norm grow with the horizon?

Gradients through chaotic dynamics grow roughly exponentially with the number of steps
(the largest Lyapunov exponent sets the rate). `gradient_growth` measures it for any loss,
so that the remedies — a thermostat that damps velocities, truncated backpropagation,
clipping, shorter horizons — can be compared by numbers rather than by hope.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree_util.tree_leaves(tree))))


def gradient_growth(loss_fn: Callable, params, horizons: Sequence[int], keys=None) -> dict:
    """Gradient norm of `loss_fn(params, n_steps[, key])` for each horizon.

    Args:
        loss_fn: `loss_fn(params, n_steps)` or, with `keys`, `loss_fn(params, n_steps, key)`;
            `n_steps` is a Python int (each horizon compiles once).
        params: any pytree of parameters.
        horizons: numbers of steps to try.
        keys: optional sequence of PRNG keys (random starts); the norms are then reported per
            key, with their median and geometric mean.

    Returns:
        dict with "horizons", "norms" (len(horizons) × len(keys) array), "median" and
        "geometric_mean" per horizon, and "growth_rate": the slope of log(geometric mean) per
        step fitted over the horizons (≈ the largest Lyapunov exponent times dt).
    """
    keys = [None] if keys is None else list(keys)
    norms = np.zeros((len(horizons), len(keys)))
    for h, n_steps in enumerate(horizons):
        if keys[0] is None:
            grad_fn = jax.jit(jax.grad(lambda p, n=int(n_steps): loss_fn(p, n)))
            norms[h, 0] = _norm(grad_fn(params))
        else:
            grad_fn = jax.jit(jax.grad(lambda p, k, n=int(n_steps): loss_fn(p, n, k)))
            norms[h] = [_norm(grad_fn(params, key)) for key in keys]
    # Zero gradients (e.g. a loss taken where truncation cut the graph) carry no growth
    # information; they are left out of the geometric mean.
    log_norms = np.log(np.where(norms > 0, norms, np.nan))
    counts = np.sum(np.isfinite(log_norms), axis=1)
    geometric = np.exp(np.where(counts > 0, np.nansum(np.where(np.isfinite(log_norms), log_norms, 0.0), axis=1)
                                / np.maximum(counts, 1), np.nan))
    valid = np.isfinite(geometric) & (geometric > 0)
    rate = float(np.polyfit(np.asarray(horizons)[valid], np.log(geometric[valid]), 1)[0]) if valid.sum() >= 2 else float("nan")
    return {
        "horizons": [int(h) for h in horizons],
        "norms": norms,
        "median": np.median(norms, axis=1),
        "geometric_mean": geometric,
        "growth_rate": rate,
    }


def plot_gradient_growth(results: dict, path, title: str = "Gradient norm against horizon"):
    """Plot one or several `gradient_growth` results (dict label → result) on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, result in results.items():
        horizons = np.asarray(result["horizons"])
        line, = ax.semilogy(horizons, result["geometric_mean"], marker="o", label=f"{label} (rate {result['growth_rate']:.3g}/step)")
        norms = np.asarray(result["norms"])
        if norms.shape[1] > 1:
            ax.fill_between(horizons, np.percentile(norms, 25, axis=1), np.percentile(norms, 75, axis=1),
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("steps differentiated through")
    ax.set_ylabel("|dLoss/dθ| (geometric mean, IQR shaded)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
