"""The constraint slot: what every integrator calls after updating positions and velocities.

An integrator moves the atoms, then hands the new positions to `constraints.positions` (which
projects them back onto the constraint surface, knowing where they came from) and, after each
velocity update, the velocities to `constraints.velocities` (which removes their components
along the constraints). Each set of constraints also says how many degrees of freedom it
removes, for every temperature. SETTLE and SHAKE/RATTLE fill this slot for rigid water and
bonds to hydrogen; `FixedAtoms` (frozen atoms, as OpenMM's zero-mass particles) is the
simplest member.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray, as_static


class Constraints(eqx.Module):
    """Base class of constraint sets (see the module docstring)."""

    @abc.abstractmethod
    def positions(self, new: Array, old: Array, inv_mass: Array, boundary) -> Array:
        """New positions (N, D) projected onto the constraints; `old` satisfies them."""

    @abc.abstractmethod
    def velocities(self, coords: Array, velocities: Array, inv_mass: Array, boundary) -> Array:
        """Velocities (N, D) with their components along the constraints removed."""

    @abc.abstractmethod
    def n_removed(self, n_dims: int) -> int:
        """Degrees of freedom the constraints remove."""

    def frozen(self, n_atoms: int) -> np.ndarray | None:
        """(N,) bool mask of atoms that never move (left out of centre-of-mass motion removal), or None."""
        return None


class NoConstraints(Constraints):
    """Nothing constrained (the default)."""

    def positions(self, new, old, inv_mass, boundary):
        return new

    def velocities(self, coords, velocities, inv_mass, boundary):
        return velocities

    def n_removed(self, n_dims: int) -> int:
        return 0


class FixedAtoms(Constraints):
    """Atoms that never move (OpenMM's zero-mass particles): their positions stay where they
    start and their velocities are zero. Each removes D degrees of freedom.

    Attributes:
        indices: (F,) 0-based atom indices (static).
    """

    indices: StaticArray = eqx.field(static=True, converter=lambda v: as_static(np.asarray(v).reshape(-1)))

    def __check_init__(self):
        if len(self.indices) and self.indices.array.min() < 0:
            raise ValueError("FixedAtoms: atom indices must be non-negative (they are 0-based)")
        if len(np.unique(self.indices.array)) != len(self.indices):
            raise ValueError("FixedAtoms: an atom is listed twice")

    def frozen(self, n_atoms: int) -> np.ndarray:
        mask = np.zeros(n_atoms, bool)
        mask[self.indices.array] = True
        return mask

    def _mask(self, n: int) -> Array:
        return jnp.asarray(self.frozen(n)[:, None])

    def positions(self, new, old, inv_mass, boundary):
        return jnp.where(self._mask(new.shape[0]), old, new)

    def velocities(self, coords, velocities, inv_mass, boundary):
        return jnp.where(self._mask(velocities.shape[0]), 0.0, velocities)

    def n_removed(self, n_dims: int) -> int:
        return n_dims * len(self.indices)
