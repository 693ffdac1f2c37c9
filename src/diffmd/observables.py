"""Differentiable observables of a configuration or a trajectory.

Configurations are (N, D) arrays; trajectories are (T, N, D) stacks such as
`Trajectory.logs["coords"]`. Everything here is differentiable (NaN-safe at coincident
points) unless it says otherwise, so any of it can be a loss.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .space.boundaries import NoBoundary
from .energy import kinetic_energy, potential_energy, temperature  # noqa: F401  (re-exported)
from .space.geometry import safe_norm


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


def pair_distances(coords: Array, boundary, pairs) -> Array:
    """Minimum-image distances of the listed pairs: (P,) for (N, D) coordinates, (T, P) for a
    trajectory (T, N, D). `pairs` is a (P, 2) integer array."""
    pairs = jnp.asarray(pairs)
    d = boundary.vector(coords[..., pairs[:, 0], :], coords[..., pairs[:, 1], :])
    return safe_norm(d)


def _shell_area(r: Array, n_dims: int) -> Array:
    return 2.0 * jnp.pi * r if n_dims == 2 else 4.0 * jnp.pi * r**2


@jax.jit  # eagerly, its many small operations would each dispatch: 4× slower
def rdf(coords: Array, boundary, r: Array, width: float) -> Array:
    """Smooth radial distribution function g(r) at the distances `r` (R,).

    Each pair distance contributes a normalised Gaussian of standard deviation `width`
    instead of a histogram count, so g is differentiable in the coordinates; as `width` → 0
    it converges to the histogram RDF. Averaged over frames for a (T, N, D) trajectory.
    Periodic boxes only (needs the volume); O(N²) per frame.
    """
    frames = coords[None] if coords.ndim == 2 else coords
    n, n_dims = frames.shape[1], frames.shape[2]
    r = jnp.asarray(r, frames.dtype)
    upper = jnp.triu_indices(n, k=1)

    def one(frame):
        dist = distance_matrix(frame, boundary)[upper]
        z = (r[:, None] - dist[None, :]) / width
        return jnp.sum(jnp.exp(-0.5 * z * z), axis=1) / (jnp.sqrt(2.0 * jnp.pi) * width)

    density_of_pairs = jnp.mean(jax.vmap(one)(frames), axis=0)  # pairs per unit distance
    ideal = 0.5 * n * (n / boundary.volume) * _shell_area(r, n_dims)
    return density_of_pairs / ideal


def kabsch_align(coords: Array, reference: Array, weights: Array | None = None) -> Array:
    """`coords` (N, D) rigidly moved (rotation without reflection + translation) onto
    `reference` to minimise the weighted RMSD (Kabsch algorithm). Open coordinates only
    (make molecules whole before aligning)."""
    w = jnp.ones(coords.shape[0], coords.dtype) if weights is None else jnp.asarray(weights, coords.dtype)
    w = w / jnp.sum(w)
    centre = jnp.sum(w[:, None] * coords, axis=0)
    centre_ref = jnp.sum(w[:, None] * reference, axis=0)
    x, y = coords - centre, reference - centre_ref
    covariance = (w[:, None] * x).T @ y
    u, _, vt = jnp.linalg.svd(covariance)
    sign = jnp.sign(jnp.linalg.det(u @ vt))
    correction = jnp.ones(coords.shape[1], coords.dtype).at[-1].set(sign)
    rotation = (u * correction) @ vt
    return x @ rotation + centre_ref


def rmsd(coords: Array, reference: Array, weights: Array | None = None, align: bool = True) -> Array:
    """Root-mean-square deviation from `reference` (length units), after optimal
    superposition when `align` (Kabsch). For a trajectory (T, N, D) returns (T,).
    `weights` (N,) e.g. masses; default uniform."""
    if coords.ndim == 3:
        return jax.vmap(lambda c: rmsd(c, reference, weights, align))(coords)
    moved = kabsch_align(coords, reference, weights) if align else coords
    w = jnp.ones(coords.shape[0], coords.dtype) if weights is None else jnp.asarray(weights, coords.dtype)
    sq = jnp.sum(w * jnp.sum((moved - reference) ** 2, axis=-1)) / jnp.sum(w)
    return _safe_sqrt(sq)


def _safe_sqrt(x: Array) -> Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def drmsd(coords: Array, reference: Array, boundary=None) -> Array:
    """Distance RMSD: RMS difference between the distance maps of `coords` and `reference`
    over all pairs i < j (no alignment needed). (T,) for a trajectory."""
    if coords.ndim == 3:
        return jax.vmap(lambda c: drmsd(c, reference, boundary))(coords)
    boundary = boundary or NoBoundary(coords.shape[1])
    upper = jnp.triu_indices(coords.shape[0], k=1)
    diff = distance_matrix(coords, boundary)[upper] - distance_matrix(reference, boundary)[upper]
    return _safe_sqrt(jnp.mean(diff * diff))


def rmsf(trajectory: Array, weights: Array | None = None, align: bool = False) -> Array:
    """Root-mean-square fluctuation of each atom about its mean position over a trajectory
    (T, N, D) — the flexibility of each atom, (N,) in length units. With `align`, frames are
    first superposed on the mean structure of the unaligned trajectory."""
    if align:
        mean = jnp.mean(trajectory, axis=0)
        trajectory = jax.vmap(lambda c: kabsch_align(c, mean, weights))(trajectory)
    deviation = trajectory - jnp.mean(trajectory, axis=0)
    return _safe_sqrt(jnp.mean(jnp.sum(deviation**2, axis=-1), axis=0))


def radius_of_gyration(coords: Array, masses: Array | None = None) -> Array:
    """Mass-weighted radius of gyration (length units) of open coordinates; (T,) for a
    trajectory."""
    if coords.ndim == 3:
        return jax.vmap(lambda c: radius_of_gyration(c, masses))(coords)
    w = jnp.ones(coords.shape[0], coords.dtype) if masses is None else jnp.asarray(masses, coords.dtype)
    centre = jnp.sum(w[:, None] * coords, axis=0) / jnp.sum(w)
    return _safe_sqrt(jnp.sum(w * jnp.sum((coords - centre) ** 2, axis=-1)) / jnp.sum(w))


def gyration_tensor(coords: Array, masses: Array | None = None) -> Array:
    """(D, D) mass-weighted gyration tensor of open coordinates."""
    w = jnp.ones(coords.shape[0], coords.dtype) if masses is None else jnp.asarray(masses, coords.dtype)
    x = coords - jnp.sum(w[:, None] * coords, axis=0) / jnp.sum(w)
    return (w[:, None] * x).T @ x / jnp.sum(w)


def asphericity(coords: Array, masses: Array | None = None) -> Array:
    """Relative shape anisotropy κ² ∈ [0, 1] of a 3-D structure: 0 for a sphere, 1 for a
    straight rod (e.g. a loss for assembling molecules into straight fibres)."""
    eig = jnp.linalg.eigvalsh(gyration_tensor(coords, masses))
    trace = jnp.sum(eig)
    return 1.5 * jnp.sum(eig**2) / trace**2 - 0.5


def time_correlation(a: Array, b: Array | None = None, max_lag: int | None = None) -> Array:
    """Time correlation C(τ) = ⟨a(t) · b(t + τ)⟩, averaged over time origins t and over every
    axis after the first, for lags τ = 0 … max_lag (in records). `a`, `b`: (T, ...) series,
    e.g. logged velocities for the velocity autocorrelation function (b defaults to a)."""
    b = a if b is None else b
    n = a.shape[0]
    max_lag = n - 1 if max_lag is None else min(int(max_lag), n - 1)
    a2 = a.reshape(n, -1)
    b2 = b.reshape(n, -1)
    values = [jnp.mean(jnp.sum(a2[: n - lag] * b2[lag:], axis=-1)) / a2.shape[1] for lag in range(max_lag + 1)]
    return jnp.stack(values)


def velocity_autocorrelation(velocities: Array, max_lag: int | None = None, normalise: bool = True) -> Array:
    """VACF of logged velocities (T, N, D): ⟨v(t)·v(t+τ)⟩ / ⟨v·v⟩ (unnormalised if asked)."""
    c = time_correlation(velocities, max_lag=max_lag)
    return c / c[0] if normalise else c


def pressure(system, coords: Array | None = None, velocities: Array | None = None) -> Array:
    """Instantaneous pressure from the virial, P = (2K − D·V·dU/dV)/(D·V), in energy/volume
    units (kJ/mol/nm³ in OpenMM units; × 16.6054 for bar). dU/dV is computed exactly by
    differentiating the potential energy under a uniform scaling of box and coordinates, so it
    holds for any energy-based interaction. Periodic boxes only."""
    coords = system.coords if coords is None else coords
    velocities = system.velocities if velocities is None else velocities
    n_dims = coords.shape[1]
    volume = system.boundary.volume

    def scaled_energy(log_scale):
        scale = jnp.exp(log_scale)
        scaled = eqx.tree_at(lambda s: s.boundary.sides, system, system.boundary.sides * scale)
        return potential_energy(scaled, coords * scale)

    # dU/d(ln s) = D·V·dU/dV for a uniform scaling x → s·x, V → s^D·V.
    du_dlns = jax.grad(scaled_energy)(jnp.zeros((), coords.dtype))
    kinetic = kinetic_energy(system.atoms.mass, velocities)
    return (2.0 * kinetic - du_dlns) / (n_dims * volume)


def heat_capacity(total_energies: Array, temperature_value, boltzmann: float) -> Array:
    """Heat capacity from energy fluctuations in the canonical ensemble,
    C = Var(E)/(k_B T²) (energy/temperature); peaks signal a phase change."""
    return jnp.var(total_energies) / (boltzmann * temperature_value**2)
