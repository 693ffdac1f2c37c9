"""Small helpers for validating inputs that may or may not be traced."""

from __future__ import annotations

import jax
import numpy as np


def concrete_or_none(x):
    """`x` as a numpy array if it holds concrete values, else None (inside a trace)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:
        return None


def is_traced(tree) -> bool:
    """True if any leaf of `tree` is a JAX tracer (we are inside jit/grad/vmap)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))
