"""Mie n-m pair potential."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff
from .mixing import atom_sigma_epsilon, check_mixing, pair_sigma_epsilon


class Mie(PairwiseInteraction):
    """Mie n-m potential: V(r) = C ε[(σ/r)ⁿ − (σ/r)ᵐ], C = n/(n−m)·(n/m)^(m/(n−m)).

    Mie(n=12, m=6) is Lennard-Jones. The exponents are differentiable leaves. Per-atom
    parameters and the other attributes as LennardJones. (σ/r)ⁿ is evaluated as exp(n log(σ/r)):
    one logarithm per pair serves both powers and their derivatives.
    """

    n: float = 12.0
    m: float = 6.0
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
        active = sigma > 0  # σ = 0: no interaction, and no NaN from log 0 in its gradient
        log_ratio = jnp.log(jnp.where(active, sigma, 1.0) / r)
        return self._from_log_ratio(log_ratio, active, epsilon)

    def energy_r2(self, r2, p_i, p_j):
        sigma, epsilon = pair_sigma_epsilon(p_i, p_j, self.mixing)
        active = sigma > 0
        safe_sigma = jnp.where(active, sigma, 1.0)
        return self._from_log_ratio(0.5 * jnp.log(safe_sigma * safe_sigma / r2), active, epsilon)

    def _from_log_ratio(self, log_ratio, active, epsilon):
        """C ε (e^{n log(σ/r)} − e^{m log(σ/r)}), zero where σ = 0."""
        n, m = self.n, self.m
        prefactor = n / (n - m) * (n / m) ** (m / (n - m))
        v = prefactor * epsilon * (jnp.exp(n * log_ratio) - jnp.exp(m * log_ratio))
        return jnp.where(active, v, 0.0)
