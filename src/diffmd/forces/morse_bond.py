"""Morse bonds."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ..space.geometry import term_distances
from ._params import float_array, like, scalars
from .base import BondedInteraction


class MorseBonds(BondedInteraction):
    """Morse bonds: V = D (1 − e^(−a (r − r0)))².

    indices (B, 2); r0 (B,) length; depth D (B,) energy; a (B,) 1/length.
    """

    r0: Array = eqx.field(converter=float_array)
    depth: Array = eqx.field(converter=float_array)
    a: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 2

    def energy(self, positions, boundary):
        a, r0, depth = (like(v, positions) for v in (self.a, self.r0, self.depth))
        x = jnp.exp(-a * (term_distances(positions, boundary) - r0))
        return depth * (1.0 - x) ** 2


def MorseBond(i: int, j: int, r0, depth, a) -> MorseBonds:
    """One Morse bond: V = D (1 − e^(−a (r − r0)))²."""
    r0, depth, a = scalars(r0, depth, a)
    return MorseBonds(indices=[[i, j]], r0=r0[None], depth=depth[None], a=a[None])
