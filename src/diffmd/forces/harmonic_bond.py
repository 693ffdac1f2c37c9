"""Harmonic bonds."""

from __future__ import annotations

import equinox as eqx
from jax import Array

from ..space.geometry import term_distances
from ._params import float_array, like, scalars
from .base import BondedInteraction


class HarmonicBonds(BondedInteraction):
    """Harmonic bonds (OpenMM's HarmonicBondForce): V = ½ k (r − r0)².

    indices (B, 2); r0 (B,) length; k (B,) energy/length².
    """

    openmm_force = "HarmonicBondForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    r0: Array = eqx.field(converter=float_array)
    k: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 2

    def energy(self, positions, boundary):
        k, r0 = like(self.k, positions), like(self.r0, positions)
        return 0.5 * k * (term_distances(positions, boundary) - r0) ** 2


def HarmonicBond(i: int, j: int, r0, k) -> HarmonicBonds:
    """One harmonic bond between atoms i and j (0-based): V = ½ k (r − r0)²."""
    r0, k = scalars(r0, k)
    return HarmonicBonds(indices=[[i, j]], r0=r0[None], k=k[None])
