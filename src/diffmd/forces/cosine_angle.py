"""Cosine angles."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ..space.geometry import term_angles
from ._params import float_array, like, scalars
from .base import BondedInteraction


class CosineAngles(BondedInteraction):
    """Cosine angles (as Molly's CosineAngle): V = k (1 + cos(θ − θ0)).

    indices (B, 3) with the vertex in the middle; θ0 (B,) radians; k (B,) energy.
    """

    theta0: Array = eqx.field(converter=float_array)
    k: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 3

    def energy(self, positions, boundary):
        k, theta0 = like(self.k, positions), like(self.theta0, positions)
        return k * (1.0 + jnp.cos(term_angles(positions, boundary) - theta0))


def CosineAngle(i: int, j: int, k_: int, theta0, k) -> CosineAngles:
    """One cosine angle i–j–k_: V = k (1 + cos(θ − θ0))."""
    theta0, k = scalars(theta0, k)
    return CosineAngles(indices=[[i, j, k_]], theta0=theta0[None], k=k[None])
