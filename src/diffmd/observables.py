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


def rdf_histogram(coords: Array, boundary, r_max: float, n_bins: int = 100):
    """Histogram radial distribution function g(r) of one configuration (or a stack of them,
    shape (T, N, D), averaged) in a periodic box. Not differentiable (a histogram).

    Returns:
        (bin centres (n_bins,), g (n_bins,)).
    """
    coords = jnp.asarray(coords)
    frames = coords[None] if coords.ndim == 2 else coords
    n, d = frames.shape[1], frames.shape[2]
    edges = jnp.linspace(0.0, r_max, n_bins + 1)
    upper = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)
    counts = jnp.zeros(n_bins)
    for frame in frames:
        dist = distance_matrix(frame, boundary)[upper]
        counts = counts + jnp.histogram(dist, bins=edges)[0]
    counts = counts / frames.shape[0]
    shell = (jnp.pi * (edges[1:] ** 2 - edges[:-1] ** 2)) if d == 2 else (4.0 / 3.0 * jnp.pi * (edges[1:] ** 3 - edges[:-1] ** 3))
    density = n / boundary.volume
    ideal = 0.5 * n * density * shell
    return 0.5 * (edges[1:] + edges[:-1]), counts / ideal
