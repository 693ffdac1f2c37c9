"""Soft-sphere (purely repulsive r⁻¹²) pair potential."""

from __future__ import annotations

import equinox as eqx

from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff
from .mixing import atom_sigma_epsilon, check_mixing, pair_sigma_epsilon


class SoftSphere(PairwiseInteraction):
    """Purely repulsive soft sphere: V(r) = 4ε(σ/r)¹², σ and ε mixed as in LennardJones.

    Per-atom parameters: `sigma` (length), `epsilon` (energy). Attributes as LennardJones.
    """

    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    mixing: str = eqx.field(static=True, default="lorentz-berthelot")
    weight_14: float = 1.0
    atom_params = ("sigma", "epsilon")

    def __check_init__(self):
        check_mixing(self.mixing)

    def atom_values(self, atoms):
        self.require_atom_params(atoms)
        return atom_sigma_epsilon(atoms, self.mixing)

    def energy(self, r, p_i, p_j):
        sigma, epsilon = pair_sigma_epsilon(p_i, p_j, self.mixing)
        s6 = (sigma / r) ** 6
        return 4.0 * epsilon * s6 * s6

    def energy_r2(self, r2, p_i, p_j):
        sigma, epsilon = pair_sigma_epsilon(p_i, p_j, self.mixing)
        s6 = (sigma * sigma / r2) ** 3
        return 4.0 * epsilon * s6 * s6
