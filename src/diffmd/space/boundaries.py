"""Periodic and open boundaries: minimum-image vectors and wrapping.

A boundary answers geometric questions only ("what is the shortest vector from a to b?");
interactions never see the box. Coordinates have shape (..., D) with D = 2 or 3.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array


class NoBoundary(eqx.Module):
    """Open space: no periodicity.

    Attributes:
        n_dims: number of spatial dimensions (2 or 3).
    """

    n_dims: int = eqx.field(static=True, default=3)

    def __check_init__(self):
        if self.n_dims not in (2, 3):
            raise ValueError(f"NoBoundary: n_dims must be 2 or 3, got {self.n_dims}")

    def vector(self, a: Array, b: Array) -> Array:
        """Vector from `a` to `b` (b − a), shape (..., D), in length units."""
        return b - a

    def vector_components(self, a: Array, b: Array) -> Array:
        """b − a for component-first arrays of shape (D, ...)."""
        return b - a

    def wrap(self, x: Array) -> Array:
        """Coordinates unchanged (nothing to wrap into)."""
        return x

    @property
    def volume(self):
        return jnp.inf

    @property
    def periodic(self) -> bool:
        return False

    def min_side(self) -> float:
        return float("inf")


class RectangularBoundary(eqx.Module):
    """Orthorhombic periodic box with its corner at the origin.

    Attributes:
        sides: box side lengths, shape (D,), in length units (nm). A float leaf, so
            gradients with respect to the box size are available (e.g. for the virial).
    """

    sides: Array

    def __init__(self, sides):
        sides = jnp.asarray(sides)
        if sides.ndim != 1 or sides.shape[0] not in (2, 3):
            raise ValueError(f"RectangularBoundary: sides must have shape (2,) or (3,), got {sides.shape}")
        if not jnp.issubdtype(sides.dtype, jnp.floating):
            sides = sides.astype(jnp.result_type(float))
        self.sides = sides
        try:
            concrete = np.asarray(sides)
        except Exception:  # traced: cannot check values here
            return
        if not np.all(np.isfinite(concrete)) or np.any(concrete <= 0):
            raise ValueError(f"RectangularBoundary: sides must be positive and finite, got {concrete}")

    @property
    def n_dims(self) -> int:
        return self.sides.shape[0]

    def vector(self, a: Array, b: Array) -> Array:
        """Minimum-image vector from `a` to `b`, shape (..., D), in length units."""
        d = b - a
        sides = self.sides.astype(d.dtype)
        return d - sides * jnp.round(d / sides)

    def vector_components(self, a: Array, b: Array) -> Array:
        """Minimum-image b − a for component-first arrays of shape (D, ...) (structure-of-
        arrays layout, which vectorises better on CPUs than (..., D))."""
        d = b - a
        sides = self.sides.astype(d.dtype).reshape((-1,) + (1,) * (d.ndim - 1))
        return d - sides * jnp.round(d / sides)

    def wrap(self, x: Array) -> Array:
        """Coordinates mapped into [0, side) along every axis."""
        sides = self.sides.astype(x.dtype)
        wrapped = x - sides * jnp.floor(x / sides)
        # Rounding can land exactly on L (x a hair below 0) or a hair below 0 (x a hair below
        # a multiple of L); fold those back so the result is always in [0, L).
        wrapped = jnp.where(wrapped < 0, wrapped + sides, wrapped)
        return jnp.where(wrapped >= sides, wrapped - sides, wrapped)

    @property
    def volume(self):
        return jnp.prod(self.sides)

    @property
    def periodic(self) -> bool:
        return True

    def min_side(self) -> float:
        """Smallest side as a Python float (needs concrete sides)."""
        return float(np.min(np.asarray(self.sides)))


def CubicBoundary(side, n_dims: int = 3) -> RectangularBoundary:
    """A periodic cube (or square for `n_dims=2`) of edge `side` (length units)."""
    if n_dims not in (2, 3):
        raise ValueError(f"CubicBoundary: n_dims must be 2 or 3, got {n_dims}")
    if np.ndim(side) != 0:  # np.ndim: works on lists, arrays and tracers (jnp.ndim rejects lists)
        raise ValueError("CubicBoundary: side must be a scalar; use RectangularBoundary for unequal sides")
    return RectangularBoundary(jnp.full((n_dims,), side, dtype=jnp.result_type(side, float)))


Boundary = NoBoundary | RectangularBoundary
"""Any boundary: open space or a periodic orthorhombic box."""


def vector(a: Array, b: Array, boundary: Boundary) -> Array:
    """Minimum-image vector from `a` to `b` (the reference's `vector(c1, c2, box_size)`)."""
    return boundary.vector(a, b)
