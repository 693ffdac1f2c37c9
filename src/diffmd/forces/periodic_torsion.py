"""Periodic torsions (proper and improper)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ..space.geometry import term_dihedrals
from ._params import float_array, like, scalars
from .base import BondedInteraction


class PeriodicTorsions(BondedInteraction):
    """Periodic torsions (OpenMM's PeriodicTorsionForce): V = k (1 + cos(n φ − φ0)).

    indices (B, 4), φ the dihedral angle of (i, j, k, l) (IUPAC sign, trans = π; for Amber's
    impropers the central atom is the third); n (B,) periodicity; φ0 (B,) phase, radians;
    k (B,) energy. A dihedral with several periodicities uses several rows.
    """

    openmm_force = "PeriodicTorsionForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    periodicity: Array = eqx.field(converter=float_array)
    phase: Array = eqx.field(converter=float_array)
    k: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 4

    def energy(self, positions, boundary):
        phi = term_dihedrals(positions, boundary, type(self).__name__)
        n, phase, k = (like(v, positions) for v in (self.periodicity, self.phase, self.k))
        return k * (1.0 + jnp.cos(n * phi - phase))


def PeriodicTorsion(i: int, j: int, k_: int, l: int, periodicity, phase, k) -> PeriodicTorsions:  # noqa: E741
    """One periodic torsion term: V = k (1 + cos(n φ − φ0))."""
    periodicity, phase, k = scalars(periodicity, phase, k)
    return PeriodicTorsions(indices=[[i, j, k_, l]], periodicity=periodicity[None], phase=phase[None], k=k[None])
