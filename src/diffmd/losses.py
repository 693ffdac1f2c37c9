"""Ready-made differentiable losses built on observables, and a weighted combination.

Every observable in `diffmd.observables` and every logger record is already differentiable,
so most losses are one line (see docs/losses.md for the reference's whole list); the helpers
here cover the common shapes.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
from jax import Array

from .observables import pair_distances, rdf


def combine(terms: Mapping[str, Array], weights: Mapping[str, float] | None = None) -> Array:
    """Weighted sum Σ_k w_k · terms[k] of scalar loss terms (weights default to 1).

    Raises:
        KeyError: if a weight names a term that is not there (a typo would otherwise be a
            silently ignored term).
    """
    weights = dict(weights or {})
    unknown = set(weights) - set(terms)
    if unknown:
        raise KeyError(f"weights for unknown loss terms {sorted(unknown)}; terms are {sorted(terms)}")
    return sum(weights.get(name, 1.0) * jnp.asarray(value) for name, value in terms.items())


def distance_loss(coords: Array, boundary, pairs, target, power: int = 1) -> Array:
    """Mean |d_ij − target|^power over the listed pairs (and over frames for a trajectory):
    the reference's "distance between atoms at the end of (or throughout) the simulation"."""
    return jnp.mean(jnp.abs(pair_distances(coords, boundary, pairs) - jnp.asarray(target)) ** power)


def rdf_loss(coords: Array, boundary, r: Array, target: Array, width: float) -> Array:
    """Mean squared difference between the smooth RDF of `coords` (a frame or a trajectory)
    and a target g(r) sampled at the distances `r`."""
    return jnp.mean((rdf(coords, boundary, r, width) - jnp.asarray(target)) ** 2)
