"""Coulomb with a reaction field beyond the cutoff (OpenMM's CutoffPeriodic and CutoffNonPeriodic)."""

from __future__ import annotations

import equinox as eqx

from ..units import OPENMM_UNITS
from .base import PairwiseInteraction
from .cutoffs import PlainCutoff


class CoulombReactionField(PairwiseInteraction):
    """Coulomb with a reaction-field continuum beyond the cutoff:

        V(r) = k q_i q_j (1/r + k_rf r² − c_rf)  for r < rc, else 0,
        k_rf = (ε_s − 1) / ((2 ε_s + 1) rc³),   c_rf = 1/rc + k_rf rc².

    Per-atom parameter: `charge` (e).

    Attributes:
        distance: cutoff rc (length units).
        solvent_dielectric: ε_s (OpenMM default 78.3).
        coulomb_const, use_neighbors, weight_14: as for Coulomb. 1-4 pairs use plain
            Coulomb scaled by weight_14, as OpenMM does for exceptions.
    """

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    distance: float = eqx.field(static=True, default=1.0)
    solvent_dielectric: float = 78.3
    use_neighbors: bool = eqx.field(static=True, default=False)
    coulomb_const: float = OPENMM_UNITS.coulomb
    weight_14: float = 1.0
    atom_params = ("charge",)

    @property
    def cutoff(self):
        return PlainCutoff(self.distance)

    def energy(self, r, p_i, p_j):
        rc = self.distance
        k_rf = (self.solvent_dielectric - 1.0) / ((2.0 * self.solvent_dielectric + 1.0) * rc**3)
        c_rf = 1.0 / rc + k_rf * rc**2
        return self.coulomb_const * p_i.charge * p_j.charge * (1.0 / r + k_rf * r**2 - c_rf)

    def energy_14(self, r, p_i, p_j):
        return self.coulomb_const * p_i.charge * p_j.charge / r
