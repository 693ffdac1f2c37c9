"""NaN-safe geometric primitives.

Every function here has finite gradients at degenerate points (zero-length vectors,
collinear atoms) thanks to the double-`where` pattern: the unsafe input is replaced
*before* the singular operation, so no inf/NaN enters the backward pass.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def safe_norm(v: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """Euclidean norm with gradient 0 (not NaN) at v = 0."""
    sq = jnp.sum(v * v, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _cross_norm(u: Array, v: Array) -> Array:
    """|u × v| for 2-D (scalar cross product) or 3-D vectors."""
    if u.shape[-1] == 2:
        return jnp.abs(u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0])
    return safe_norm(jnp.cross(u, v))


def safe_atan2(y: Array, x: Array) -> Array:
    """atan2 with finite gradients at (0, 0), where it returns 0."""
    degenerate = (x == 0) & (y == 0)
    return jnp.where(degenerate, 0.0, jnp.arctan2(y, jnp.where(degenerate, 1.0, x)))


def bond_angle(u: Array, v: Array) -> Array:
    """Angle between vectors u and v (radians, in [0, π]), shape (...,).

    Uses atan2(|u × v|, u · v), which stays accurate near 0 and π where arccos does not.
    """
    return safe_atan2(_cross_norm(u, v), jnp.sum(u * v, axis=-1))


def dihedral_angle(b1: Array, b2: Array, b3: Array) -> Array:
    """Dihedral angle (radians, in (−π, π]) for bond vectors b1 = x_j − x_i, b2 = x_k − x_j,
    b3 = x_l − x_k; IUPAC sign convention (trans = π), as in OpenMM."""
    n1 = jnp.cross(b1, b2)
    n2 = jnp.cross(b2, b3)
    y = safe_norm(b2) * jnp.sum(b1 * n2, axis=-1)
    x = jnp.sum(n1 * n2, axis=-1)
    return safe_atan2(y, x)


# ---- the geometry of bonded terms: positions (B, k, D) of each term's atoms -----------------


def term_distances(positions: Array, boundary) -> Array:
    """(B,) distance between the two atoms of each term, positions (B, 2, D)."""
    return safe_norm(boundary.vector(positions[:, 0], positions[:, 1]))


def term_angles(positions: Array, boundary) -> Array:
    """(B,) angle at the middle atom j of each (i, j, k), radians; positions (B, 3, D)."""
    return bond_angle(boundary.vector(positions[:, 1], positions[:, 0]),
                      boundary.vector(positions[:, 1], positions[:, 2]))


def term_dihedrals(positions: Array, boundary, name: str = "torsion") -> Array:
    """(B,) dihedral angle of each (i, j, k, l), radians in (−π, π]; positions (B, 4, 3)."""
    if positions.shape[-1] != 3:
        raise ValueError(f"{name}: torsions (dihedral angles) need 3-D coordinates, got {positions.shape[-1]}-D")
    b1 = boundary.vector(positions[:, 0], positions[:, 1])
    b2 = boundary.vector(positions[:, 1], positions[:, 2])
    b3 = boundary.vector(positions[:, 2], positions[:, 3])
    return dihedral_angle(b1, b2, b3)
