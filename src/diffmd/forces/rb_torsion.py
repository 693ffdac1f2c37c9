"""Ryckaert–Bellemans torsions."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ..space.geometry import term_dihedrals
from ._params import float_array, like
from .base import BondedInteraction


class RBTorsions(BondedInteraction):
    """Ryckaert–Bellemans torsions (OpenMM's RBTorsionForce): V = Σ_{n=0..5} C_n cos(ψ)ⁿ,
    ψ = φ − π; indices (B, 4), coefficients (B, 6) energy."""

    openmm_force = "RBTorsionForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    coefficients: Array = eqx.field(converter=float_array)
    mergeable = True
    atoms_per_term = 4
    parameter_shapes = {"coefficients": (6,)}  # noqa: RUF012

    def energy(self, positions, boundary):
        c = jnp.cos(term_dihedrals(positions, boundary, type(self).__name__) - jnp.pi)
        # Horner's rule: Σ C_n cⁿ with no pow (finite gradients for any sign of c).
        coefficients = like(self.coefficients, positions)
        total = coefficients[:, 5]
        for n in range(4, -1, -1):
            total = total * c + coefficients[:, n]
        return total


def RBTorsion(i: int, j: int, k_: int, l: int, coefficients) -> RBTorsions:  # noqa: E741
    """One Ryckaert–Bellemans torsion with six coefficients C0…C5."""
    coefficients = jnp.asarray(coefficients)
    if coefficients.shape != (6,):
        raise ValueError(f"RBTorsion: need 6 coefficients, got shape {coefficients.shape}")
    return RBTorsions(indices=[[i, j, k_, l]], coefficients=coefficients[None])
