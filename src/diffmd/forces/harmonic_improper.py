"""Harmonic impropers (CHARMM)."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ..space.geometry import term_dihedrals
from ._params import float_array, like, scalars
from .base import BondedInteraction


class HarmonicImpropers(BondedInteraction):
    """CHARMM's harmonic impropers: V = k Δθ², Δθ the periodic difference of θ from θ0.

    As OpenMM builds them (a CustomTorsionForce with `k*min(dtheta, 2*pi-dtheta)^2;
    dtheta = abs(theta-theta0)`, in `charmm36_2024.xml` and `CharmmPsfFile`): θ is the dihedral
    angle of (i, j, k, l) (IUPAC sign, in (−π, π]), and Δθ = θ − θ0 wrapped into [−π, π], so
    V is continuous across the ±π seam. No ½: k is CHARMM's constant.

    indices (B, 4); theta0 (B,) radians; k (B,) energy/rad².

    The wrap is θ − θ0 − 2π·round((θ − θ0)/2π): the same value as OpenMM's expression for θ0
    in [−π, π] (any θ0 differs from it only by whole turns), and smooth everywhere except at
    |Δθ| = π (a maximum of V), with no abs/min kink at Δθ = 0 and no NaN in any gradient.
    (The older `charmm36.xml` writes `k*(theta-theta0)^2` without the wrap; it agrees with
    this one for its θ0 = 0 impropers, and for θ0 = π only while |θ − θ0| <= π.)
    """

    openmm_force = "CustomTorsionForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    theta0: Array = eqx.field(converter=float_array)
    k: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 4

    def energy(self, positions, boundary):
        theta = term_dihedrals(positions, boundary, type(self).__name__)
        theta0, k = like(self.theta0, positions), like(self.k, positions)
        diff = theta - theta0
        diff = diff - (2.0 * math.pi) * jnp.round(diff / (2.0 * math.pi))
        return k * diff * diff


def HarmonicImproper(i: int, j: int, k_: int, l: int, theta0, k) -> HarmonicImpropers:  # noqa: E741
    """One CHARMM harmonic improper: V = k Δθ², Δθ = θ − θ0 wrapped into [−π, π]."""
    theta0, k = scalars(theta0, k)
    return HarmonicImpropers(indices=[[i, j, k_, l]], theta0=theta0[None], k=k[None])
