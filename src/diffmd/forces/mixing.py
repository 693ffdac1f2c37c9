"""Combining rules: per-pair σ and ε from per-atom values.

    Lorentz–Berthelot (OpenMM, Amber, CHARMM):  σ_ij = (σ_i + σ_j)/2,  ε_ij = √(ε_i ε_j)
    geometric (OPLS; the reference's Molly):     σ_ij = √(σ_i σ_j),   ε_ij = √(ε_i ε_j)

The square roots are taken once per atom (`atom_values`), so a pair needs only products:
ε_ij = √ε_i·√ε_j. Zero parameters give zero (not infinite) gradients of the root.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

MIXING_RULES = ("lorentz-berthelot", "geometric")


def safe_sqrt(x: Array) -> Array:
    """√x with zero (not infinite) gradient at x = 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def check_mixing(mixing: str) -> None:
    if mixing not in MIXING_RULES:
        raise ValueError(f"unknown mixing rule {mixing!r}; choose one of {MIXING_RULES}")


def atom_sigma_epsilon(atoms, mixing: str) -> dict[str, Array]:
    """Per-atom values the pair function mixes: σ (or √σ for geometric mixing) and √ε."""
    sigma = atoms["sigma"]
    return {"sigma": sigma if mixing == "lorentz-berthelot" else safe_sqrt(sigma),
            "sqrt_epsilon": safe_sqrt(atoms["epsilon"])}


def pair_sigma_epsilon(p_i, p_j, mixing: str) -> tuple[Array, Array]:
    """(σ_ij, ε_ij) from the per-atom values of `atom_sigma_epsilon`."""
    epsilon = p_i.sqrt_epsilon * p_j.sqrt_epsilon
    if mixing == "lorentz-berthelot":
        return 0.5 * (p_i.sigma + p_j.sigma), epsilon
    return p_i.sigma * p_j.sigma, epsilon
