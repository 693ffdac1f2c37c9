"""1-4 pairs scaled by each pairwise interaction's `weight_14` (GROMACS's fudge factors).

`System(pairs_14=...)` lists them; they are removed from the ordinary pair sum and added back
as weight_14 × the interaction's 1-4 energy (no cutoff; plain Coulomb for the reaction field,
as OpenMM evaluates its exceptions). Force fields that give every 1-4 pair its own parameters
use `NonbondedExceptions` instead.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..space.geometry import safe_norm
from .base import Params


def scaled_pairs(terms, atoms, coords, boundary, pairs):
    """(energy, forces (N, D)) of the 1-4 pairs (P, 2) for each pairwise term."""
    energy = jnp.zeros((), coords.dtype)
    forces = jnp.zeros_like(coords)
    if not len(pairs) or not terms:
        return energy, forces
    i, j = jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])
    d = boundary.vector(coords[i], coords[j])
    r = safe_norm(d)
    safe_r = jnp.where(r > 0, r, 1.0)
    for term in terms:
        values = term.atom_values(atoms)
        p_i = Params({name: v.astype(coords.dtype)[i] for name, v in values.items()})
        p_j = Params({name: v.astype(coords.dtype)[j] for name, v in values.items()})
        v, s = term.value_and_scale_14(safe_r, p_i, p_j)
        weight = jnp.asarray(term.weight_14, coords.dtype)
        energy = energy + weight * jnp.sum(jnp.where(r > 0, v, 0.0))
        f_i = (weight * jnp.where(r > 0, s, 0.0))[:, None] * d  # on atom i: s·(x_j − x_i)
        forces = forces.at[i].add(f_i.astype(forces.dtype)).at[j].add(-f_i.astype(forces.dtype))
    return energy, forces


__all__ = ["scaled_pairs"]

