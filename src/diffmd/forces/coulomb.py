"""Coulomb's law between point charges."""

from __future__ import annotations

import equinox as eqx

from ..units import OPENMM_UNITS
from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff


class Coulomb(PairwiseInteraction):
    """Coulomb's law: V(r) = k q_i q_j / r.

    Per-atom parameter: `charge` (e).

    Attributes:
        cutoff: cutoff scheme (default none; plain or shifted cutoffs for truncated Coulomb).
        coulomb_const: k = 1/(4π ε0) in energy·length/charge²; default OpenMM's
            138.935458 kJ/mol·nm/e². Use `REDUCED_UNITS.coulomb` (1) for reduced units.
        use_neighbors, weight_14: as for LennardJones (Amber uses weight_14 = 1/1.2).
    """

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    coulomb_const: float = OPENMM_UNITS.coulomb
    weight_14: float = 1.0
    atom_params = ("charge",)

    def energy(self, r, p_i, p_j):
        return self.coulomb_const * p_i.charge * p_j.charge / r
