"""Harmonic angles."""

from __future__ import annotations

import equinox as eqx
from jax import Array

from ..space.geometry import term_angles
from ._params import float_array, like, scalars
from .base import BondedInteraction


class HarmonicAngles(BondedInteraction):
    """Harmonic angles (OpenMM's HarmonicAngleForce): V = ½ k (θ − θ0)².

    indices (B, 3) with the vertex in the middle; θ0 (B,) radians; k (B,) energy/rad².
    """

    openmm_force = "HarmonicAngleForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    theta0: Array = eqx.field(converter=float_array)
    k: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 3

    def energy(self, positions, boundary):
        k, theta0 = like(self.k, positions), like(self.theta0, positions)
        return 0.5 * k * (term_angles(positions, boundary) - theta0) ** 2


def HarmonicAngle(i: int, j: int, k_: int, theta0, k) -> HarmonicAngles:
    """One harmonic angle i–j–k_ (vertex j): V = ½ k (θ − θ0)², θ0 in radians."""
    theta0, k = scalars(theta0, k)
    return HarmonicAngles(indices=[[i, j, k_]], theta0=theta0[None], k=k[None])
