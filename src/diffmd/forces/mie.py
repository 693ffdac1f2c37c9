"""Mie n-m pair potential."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff
from .mixing import atom_sigma_epsilon, check_mixing, pair_sigma_epsilon


@jax.custom_jvp
def log_ratio(a, b):
    """log(a/b) for a, b > 0, with the derivatives 1/a and −1/b: the chain rule through a/b
    would divide by a/b once more (a division per pair in the compiled kernels, where 1/r
    is already at hand)."""
    return jnp.log(a / b)


def _log_ratio_jvp(primals, tangents):
    a, b = primals
    a_dot, b_dot = tangents
    slope = 0.0
    if not isinstance(a_dot, SymbolicZero):
        slope = slope + a_dot / a
    if not isinstance(b_dot, SymbolicZero):
        slope = slope - b_dot / b
    shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    return log_ratio(a, b), jnp.broadcast_to(jnp.asarray(slope, jnp.result_type(a, b)), shape)


log_ratio.defjvp(_log_ratio_jvp, symbolic_zeros=True)


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
        return self._from_log_ratio(log_ratio(jnp.where(active, sigma, 1.0), r), active, epsilon)

    def energy_r2(self, r2, p_i, p_j):
        sigma, epsilon = pair_sigma_epsilon(p_i, p_j, self.mixing)
        active = sigma > 0
        safe_sigma = jnp.where(active, sigma, 1.0)
        return self._from_log_ratio(0.5 * log_ratio(safe_sigma * safe_sigma, r2), active, epsilon)

    def _from_log_ratio(self, log_ratio, active, epsilon):
        """C ε (e^{n log(σ/r)} − e^{m log(σ/r)}), zero where σ = 0."""
        n, m = self.n, self.m
        prefactor = n / (n - m) * (n / m) ** (m / (n - m))
        v = prefactor * epsilon * (jnp.exp(n * log_ratio) - jnp.exp(m * log_ratio))
        return jnp.where(active, v, 0.0)
