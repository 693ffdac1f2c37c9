"""Exception pairs with their own parameters (OpenMM's NonbondedForce exceptions)."""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jax import Array

from ..space.geometry import term_distances
from ..units import OPENMM_UNITS
from ._params import float_array, like
from .base import BondedInteraction
from .lennard_jones import lennard_jones


class NonbondedExceptions(BondedInteraction):
    """Pairs whose ordinary pair terms are replaced by their own Lennard-Jones + Coulomb term,
    as OpenMM's NonbondedForce exceptions (the 1-4 pairs of every real force field):

        V = k q_ij / r + 4 ε_ij [(σ_ij/r)¹² − (σ_ij/r)⁶],   no cutoff.

    The listed pairs are removed from every pairwise interaction's ordinary sum (a pair with
    q_ij = ε_ij = 0 is then a plain exclusion). A sparse list: no N×N matrix anywhere.

    Attributes:
        indices: (E, 2) atom pairs.
        charge_prod: (E,) charge products q_ij (e²).
        sigma: (E,) σ_ij (length).
        epsilon: (E,) ε_ij (energy).
        coulomb_const: k (energy·length/charge²), default OpenMM's.
    """

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    charge_prod: Array = eqx.field(converter=float_array)
    sigma: Array = eqx.field(converter=float_array)
    epsilon: Array = eqx.field(converter=float_array)
    coulomb_const: float = OPENMM_UNITS.coulomb
    mergeable = True
    atoms_per_term = 2

    def excluded_pairs(self) -> np.ndarray:
        return self.indices.array

    def energy(self, positions, boundary):
        r = term_distances(positions, boundary)
        qq, sigma, epsilon = (like(v, positions) for v in (self.charge_prod, self.sigma, self.epsilon))
        return self.coulomb_const * qq / r + lennard_jones(r, sigma, epsilon)
