"""Lennard-Jones from per-type-pair tables (CHARMM with NBFIX: OpenMM's CustomNonbondedForce)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ._params import float_array
from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff


class TabulatedLennardJones(PairwiseInteraction):
    """V(r) = A[t_i, t_j] / r¹² − B[t_i, t_j] / r⁶ with A and B tabulated per pair of LJ types, as
    the CustomNonbondedForce `acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6` openmm.app makes
    for CHARMM (pair-specific NBFIX values in the tables).

    Per-atom parameter: `lj_type` (the row of the tables, stored as a float).

    Attributes:
        acoef, bcoef: (T, T) tables, energy·length¹² and energy·length⁶ (differentiable).
        cutoff, use_neighbors: as for LennardJones.
    """

    openmm_force = "CustomNonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    acoef: Array = eqx.field(converter=float_array)
    bcoef: Array = eqx.field(converter=float_array)
    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    atom_params = ("lj_type",)

    def energy(self, r, p_i, p_j):
        ti, tj = (jnp.round(p.lj_type).astype(jnp.int32) for p in (p_i, p_j))
        a, b = self.acoef[ti, tj], self.bcoef[ti, tj]
        inv6 = (1.0 / r) ** 6
        return (a * inv6 - b) * inv6

    def energy_r2(self, r2, p_i, p_j):
        ti, tj = (jnp.round(p.lj_type).astype(jnp.int32) for p in (p_i, p_j))
        a, b = self.acoef[ti, tj], self.bcoef[ti, tj]
        inv6 = (1.0 / r2) ** 3
        return (a * inv6 - b) * inv6
