"""Starting conditions: Maxwell–Boltzmann velocities and overlap-free random coordinates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .space.boundaries import NoBoundary, RectangularBoundary
from .units import OPENMM_UNITS, UnitSystem


def random_velocities(key, masses: Array, temperature, units: UnitSystem = OPENMM_UNITS, n_dims: int = 3,
                      remove_drift: bool = False, dtype=None) -> Array:
    """Velocities drawn from the Maxwell–Boltzmann distribution (the reference's `velocity`).

    Each component is normal with variance k_B T / m.

    Args:
        key: JAX PRNG key.
        masses: (N,) masses (amu, or reduced).
        temperature: T (K, or reduced); may be traced.
        units: unit system supplying k_B (REDUCED_UNITS for the reference's examples).
        n_dims: 2 or 3.
        remove_drift: subtract the centre-of-mass velocity (the total momentum is then zero and
            the expected temperature is lower by a factor (N−1)/N).
        dtype: floating dtype of the result (default: that of `masses`).

    Returns:
        (N, n_dims) velocities (length/time units).
    """
    masses = jnp.asarray(masses)
    if masses.ndim != 1:
        raise ValueError(f"random_velocities: masses must be 1-D, got shape {masses.shape}")
    dtype = dtype or (masses.dtype if jnp.issubdtype(masses.dtype, jnp.floating) else jnp.result_type(float))
    scale = jnp.sqrt(units.boltzmann * temperature / masses).astype(dtype)
    v = scale[:, None] * jax.random.normal(key, (masses.shape[0], n_dims), dtype=dtype)
    if remove_drift:
        momentum = jnp.sum(masses[:, None] * v, axis=0) / jnp.sum(masses)
        v = v - momentum.astype(dtype)
    return v


def random_coords(key, n_atoms: int, boundary, min_distance: float = 0.0, box_size=None,
                  max_tries: int = 1000, dtype=None) -> Array:
    """Uniformly random coordinates with no pair closer than `min_distance` (minimum image).

    Atoms are placed one by one; each candidate is redrawn until it is at least
    `min_distance` from every atom already placed.

    Args:
        key: JAX PRNG key (or an int seed).
        n_atoms: number of atoms N.
        boundary: RectangularBoundary (coordinates in [0, side)) or NoBoundary (then give
            `box_size`, the side of the cube or square to fill).
        min_distance: smallest allowed pair distance (length units).
        max_tries: candidates per atom before giving up.
        dtype: floating dtype of the result (default: JAX's default float).

    Returns:
        (N, D) coordinates.

    Raises:
        ValueError: if an atom cannot be placed (the box is too crowded for `min_distance`).
    """
    if isinstance(boundary, RectangularBoundary):
        sides = np.asarray(boundary.sides, dtype=np.float64)
        periodic = True
    elif isinstance(boundary, NoBoundary):
        if box_size is None:
            raise ValueError("random_coords: give box_size when the boundary is NoBoundary")
        sides = np.full(boundary.n_dims, float(box_size))
        periodic = False
    else:
        raise TypeError(f"random_coords: unsupported boundary {type(boundary).__name__}")
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1)) if not isinstance(key, int) else key
    rng = np.random.default_rng(seed)
    placed = np.zeros((n_atoms, len(sides)))
    min_sq = float(min_distance) ** 2
    for i in range(n_atoms):
        for _ in range(max_tries):
            candidate = rng.uniform(0.0, 1.0, len(sides)) * sides
            d = placed[:i] - candidate
            if periodic:
                d -= sides * np.round(d / sides)
            if i == 0 or np.min(np.sum(d * d, axis=1)) >= min_sq:
                placed[i] = candidate
                break
        else:
            raise ValueError(
                f"random_coords: could not place atom {i} of {n_atoms} at least {min_distance} from the "
                f"others after {max_tries} tries; the box is too crowded"
            )
    return jnp.asarray(placed, dtype=dtype or jnp.result_type(float))
