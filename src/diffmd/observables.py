"""Differentiable observables of a configuration or a trajectory."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from .energy import kinetic_energy, temperature  # noqa: F401  (re-exported)
from .interactions.geometry import safe_norm


def distance_matrix(coords: Array, boundary) -> Array:
    """(N, N) minimum-image distances; the diagonal is 0 with a zero (not NaN) gradient."""
    d = boundary.vector(coords[:, None, :], coords[None, :, :])
    return safe_norm(d)


def min_separations(coords: Array, boundary) -> Array:
    """(N,) distance from each atom to its nearest other atom."""
    n = coords.shape[0]
    dist = distance_matrix(coords, boundary)
    return jnp.min(jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist), axis=1)


def mean_min_separation(coords: Array, boundary) -> Array:
    """Mean over atoms of the distance to the closest other atom (the reference's
    `meanminseparation`)."""
    return jnp.mean(min_separations(coords, boundary))
