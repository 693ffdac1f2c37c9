"""Listed Lennard-Jones pairs with their own σ and ε (CHARMM's 1-4 pairs: OpenMM's CustomBondForce)."""

from __future__ import annotations

import equinox as eqx
from jax import Array

from ..space.geometry import term_distances
from ._params import float_array, like
from .base import BondedInteraction
from .lennard_jones import lennard_jones


class LennardJonesPairs(BondedInteraction):
    """V = 4 ε_ij [(σ_ij/r)¹² − (σ_ij/r)⁶] for listed pairs, no cutoff (OpenMM's CustomBondForce
    `4*epsilon*((sigma/r)^12-(sigma/r)^6)` that openmm.app makes for CHARMM's 1-4 pairs). The
    pairs are not removed from the pair sum: list them as exclusions where they should be.

    indices (B, 2); sigma (B,) length; epsilon (B,) energy.
    """

    openmm_force = "CustomBondForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    sigma: Array = eqx.field(converter=float_array)
    epsilon: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 2

    def energy(self, positions, boundary):
        r = term_distances(positions, boundary)
        return lennard_jones(r, like(self.sigma, positions), like(self.epsilon, positions))
