"""Built-in pairwise interactions (energies in the units of ε or of the Coulomb constant)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from ..atoms import Atoms
from ..units import OPENMM_UNITS
from .base import PairwiseInteraction
from .cutoffs import Cutoff, NoCutoff, PlainCutoff

MIXING_RULES = ("lorentz-berthelot", "geometric")


def _safe_sqrt(x: Array) -> Array:
    """√x with zero (not infinite) gradient at x = 0, for mixing rules with zero parameters."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def mix_sigma_epsilon(atoms_i: Atoms, atoms_j: Atoms, mixing: str):
    """Per-pair σ and ε from per-atom values.

    Lorentz–Berthelot: σ = (σi + σj)/2, ε = √(εi εj). Geometric: σ = √(σi σj), ε = √(εi εj).
    """
    epsilon = _safe_sqrt(atoms_i.epsilon * atoms_j.epsilon)
    if mixing == "lorentz-berthelot":
        sigma = 0.5 * (atoms_i.sigma + atoms_j.sigma)
    else:
        sigma = _safe_sqrt(atoms_i.sigma * atoms_j.sigma)
    return sigma, epsilon


def _check_mixing(mixing: str):
    if mixing not in MIXING_RULES:
        raise ValueError(f"unknown mixing rule {mixing!r}; choose one of {MIXING_RULES}")


def _lj(r, sigma, epsilon):
    s6 = (sigma / r) ** 6
    return 4.0 * epsilon * (s6 * s6 - s6)


def _lj_force(r, sigma, epsilon):
    """−dV/dr of the 12-6 potential (positive when repulsive)."""
    s6 = (sigma / r) ** 6
    return 24.0 * epsilon * (2.0 * s6 * s6 - s6) / r


def _cap_distance(sigma, epsilon, force_cap, iterations: int = 8):
    """Distance r* < 2^(1/6)σ at which the LJ repulsion equals `force_cap`.

    Newton's method on log F(log r), which is almost linear (F ∝ r^-13 at short range),
    from the pure-r^-12 estimate; 8 iterations reach machine precision. The iterations run
    in a loop without gradients (cheap to compile); one final Newton step with live σ, ε
    leaves the value unchanged at convergence and gives the exact derivative of r* (implicit
    function theorem). Pairs with σ = 0 or ε = 0 get r* = 0 (no cap needed).
    """
    active = (sigma > 0) & (epsilon > 0)
    log_sig = jnp.log(jnp.where(active, sigma, 1.0))
    log_eps = jnp.log(jnp.where(active, epsilon, 1.0))
    log_cap = math.log(force_cap)

    def residual(u, log_sig, log_eps):
        """h(u) = log F(e^u) − log cap and dh/du."""
        s6 = jnp.exp(6.0 * (log_sig - u))
        g = 2.0 * s6 * s6 - s6
        h = math.log(24.0) + log_eps - u + jnp.log(g) - log_cap
        dh = -1.0 + (-24.0 * s6 * s6 + 6.0 * s6) / g
        return h, dh

    u_max = log_sig + math.log(2.0) / 6.0 - 1e-3  # just inside the repulsive wall
    frozen_sig, frozen_eps, frozen_max = (jax.lax.stop_gradient(x) for x in (log_sig, log_eps, u_max))
    u0 = jnp.minimum((math.log(48.0) + frozen_eps + 12.0 * frozen_sig - log_cap) / 13.0, frozen_max)

    def newton(_, u):
        h, dh = residual(u, frozen_sig, frozen_eps)
        return jnp.minimum(u - h / dh, frozen_max)

    u = jax.lax.fori_loop(0, iterations, newton, u0)
    clamped = u >= frozen_max  # tiny caps: r* pinned just inside the minimum
    h, dh = residual(u, log_sig, log_eps)
    u = jnp.where(clamped, u_max, u - h / dh)
    return jnp.where(active, jnp.exp(u), 0.0)


class LennardJones(PairwiseInteraction):
    """Lennard-Jones 12-6: V(r) = 4ε[(σ/r)¹² − (σ/r)⁶], σ and ε mixed from per-atom values.

    Attributes:
        cutoff: cutoff scheme (default none). With `use_neighbors=True` a finite cutoff no
            larger than the neighbor finder's is required.
        use_neighbors: only pairs on the neighbor list interact (the reference's `nl_only`).
        mixing: "lorentz-berthelot" (default, as OpenMM) or "geometric" (the reference's Molly).
        weight_14: scale factor for 1-4 pairs (e.g. 0.5 for Amber).
        force_cap: optional cap on the pair force magnitude (energy/length). Off by default.
            Below the distance r* where the LJ force reaches the cap, the potential continues
            linearly, V(r) = V(r*) + cap·(r* − r), so force = −∇E still holds exactly. The
            reference's Molly capped its LJ force at 100 ("a fudge to stop it exploding").
            Only the repulsive wall is capped: the attractive force never exceeds ≈2.4 ε/σ,
            so a cap above that bounds every pair force.

    Pairs where either atom has σ = 0 or ε = 0 contribute nothing (and no NaN gradients).
    """

    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    mixing: str = eqx.field(static=True, default="lorentz-berthelot")
    weight_14: float = 1.0
    force_cap: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_mixing(self.mixing)
        if self.force_cap is not None and not self.force_cap > 0:
            raise ValueError(f"LennardJones: force_cap must be positive, got {self.force_cap}")

    def potential(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        sigma, epsilon = mix_sigma_epsilon(atoms_i, atoms_j, self.mixing)
        if self.force_cap is None:
            return _lj(r, sigma, epsilon)
        r_cap = _cap_distance(sigma, epsilon, self.force_cap)
        below = r < r_cap
        r_safe = jnp.where(below, jnp.where(r_cap > 0, r_cap, 1.0), r)
        v = _lj(r_safe, sigma, epsilon)
        return jnp.where(below, v + self.force_cap * (r_cap - r), v)


class SoftSphere(PairwiseInteraction):
    """Purely repulsive soft sphere: V(r) = 4ε(σ/r)¹², σ and ε mixed as in LennardJones."""

    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    mixing: str = eqx.field(static=True, default="lorentz-berthelot")
    weight_14: float = 1.0

    def __check_init__(self):
        _check_mixing(self.mixing)

    def potential(self, r, atoms_i, atoms_j):
        sigma, epsilon = mix_sigma_epsilon(atoms_i, atoms_j, self.mixing)
        return 4.0 * epsilon * (sigma / r) ** 12


class Mie(PairwiseInteraction):
    """Mie n-m potential: V(r) = C ε[(σ/r)ⁿ − (σ/r)ᵐ], C = n/(n−m)·(n/m)^(m/(n−m)).

    Mie(n=12, m=6) is Lennard-Jones. The exponents are differentiable leaves.
    """

    n: float = 12.0
    m: float = 6.0
    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    mixing: str = eqx.field(static=True, default="lorentz-berthelot")
    weight_14: float = 1.0

    def __check_init__(self):
        _check_mixing(self.mixing)

    def potential(self, r, atoms_i, atoms_j):
        sigma, epsilon = mix_sigma_epsilon(atoms_i, atoms_j, self.mixing)
        n, m = self.n, self.m
        prefactor = n / (n - m) * (n / m) ** (m / (n - m))
        return prefactor * epsilon * ((sigma / r) ** n - (sigma / r) ** m)


class Coulomb(PairwiseInteraction):
    """Coulomb's law: V(r) = k q_i q_j / r.

    Attributes:
        cutoff: cutoff scheme (default none; plain or shifted cutoffs for truncated Coulomb).
        coulomb_const: k = 1/(4π ε0) in energy·length/charge²; default OpenMM's
            138.935458 kJ/mol·nm/e². Use `REDUCED_UNITS.coulomb` (1) for reduced units.
        use_neighbors, weight_14: as for LennardJones (Amber uses weight_14 = 1/1.2).
    """

    cutoff: Cutoff = NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    coulomb_const: float = OPENMM_UNITS.coulomb
    weight_14: float = 1.0

    def potential(self, r, atoms_i, atoms_j):
        return self.coulomb_const * atoms_i.charge * atoms_j.charge / r


class CoulombReactionField(PairwiseInteraction):
    """Coulomb with a reaction-field continuum beyond the cutoff (OpenMM's CutoffPeriodic):

        V(r) = k q_i q_j (1/r + k_rf r² − c_rf)  for r < rc, else 0,
        k_rf = (ε_s − 1) / ((2 ε_s + 1) rc³),   c_rf = 1/rc + k_rf rc².

    Attributes:
        distance: cutoff rc (length units).
        solvent_dielectric: ε_s (OpenMM default 78.3).
        coulomb_const, use_neighbors, weight_14: as for Coulomb. 1-4 pairs use plain
            Coulomb scaled by weight_14, as OpenMM does for exceptions.
    """

    distance: float = eqx.field(static=True, default=1.0)
    solvent_dielectric: float = 78.3
    use_neighbors: bool = eqx.field(static=True, default=False)
    coulomb_const: float = OPENMM_UNITS.coulomb
    weight_14: float = 1.0

    @property
    def cutoff(self):
        return PlainCutoff(self.distance)

    def potential(self, r, atoms_i, atoms_j):
        rc = self.distance
        k_rf = (self.solvent_dielectric - 1.0) / ((2.0 * self.solvent_dielectric + 1.0) * rc**3)
        c_rf = 1.0 / rc + k_rf * rc**2
        return self.coulomb_const * atoms_i.charge * atoms_j.charge * (1.0 / r + k_rf * r**2 - c_rf)

    def potential_14(self, r, atoms_i, atoms_j):
        return self.coulomb_const * atoms_i.charge * atoms_j.charge / r
