"""The two kinds of interaction and what the engine asks of each.

*Pairwise* ("general") interactions act between every eligible pair of atoms (optionally only
those on the neighbor list); subclasses supply the radial kernel
`potential(r, atoms_i, atoms_j)` — or, for a force-only interaction, `pair_force` — and the
base class applies the cutoff.

*Specific* (bonded) interactions act on listed tuples of atoms (`indices`, shape (B, k));
subclasses supply `energy(positions, boundary)` returning (B,) energies for positions of shape
(B, k, D) — or, for a force-only interaction such as the reference's `NNBond`, `force`
returning (B, k, D) forces. Forces of energy-based terms are always −∇E (autodiff).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray, as_static
from ..atoms import Atoms
from .cutoffs import NoCutoff


class PairwiseInteraction(eqx.Module):
    """Base class for interactions between pairs of atoms.

    Subclasses define the fields `cutoff` (a cutoff scheme), `use_neighbors` (static bool:
    only pairs on the neighbor list interact) and `weight_14` (scale factor for 1-4 pairs,
    see `System.pairs_14`), and implement one of

    * `potential(r, atoms_i, atoms_j) -> (P,)` — the raw energy of pairs at distances r (P,),
      with per-pair atom properties `atoms_i`, `atoms_j` (Atoms of length P). The cutoff is
      applied by the base class.
    * `pair_force(r, atoms_i, atoms_j) -> (P,)` — force-only interactions: the magnitude of
      the force along the pair axis, positive when repulsive. No energy is defined.

    A subclass that does not declare `cutoff`, `use_neighbors` or `weight_14` gets the class
    defaults below (no cutoff, all pairs, 1-4 pairs at full weight).
    """

    # Class-level defaults (not dataclass fields): subclasses override them by declaring fields.
    cutoff = NoCutoff()
    use_neighbors = False
    weight_14 = 1.0

    def potential(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        raise NotImplementedError

    def pair_force(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        raise NotImplementedError

    @property
    def has_energy(self) -> bool:
        return type(self).potential is not PairwiseInteraction.potential

    @property
    def cutoff_distance(self) -> float:
        return self.cutoff.distance

    def pair_energy(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        """Energy of each pair with the cutoff applied, shape (P,)."""
        return self.cutoff.apply(lambda rr: self.potential(rr, atoms_i, atoms_j), r)

    def potential_14(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        """Raw energy of 1-4 pairs before `weight_14` (no cutoff, as OpenMM's exceptions)."""
        return self.potential(r, atoms_i, atoms_j)

    def capped_pair_force(self, r: Array, atoms_i: Atoms, atoms_j: Atoms) -> Array:
        """Force magnitude of a force-only interaction, zero beyond its cutoff."""
        inside = r < self.cutoff_distance
        return jnp.where(inside, self.pair_force(jnp.where(inside, r, 1.0), atoms_i, atoms_j), 0.0)


def _as_indices(values) -> StaticArray:
    indices = as_static(values)
    if indices.array.ndim != 2:
        raise ValueError(f"indices must have shape (n_terms, atoms_per_term), got {indices.shape}")
    return indices


class SpecificInteraction(eqx.Module):
    """Base class for interactions between listed tuples of atoms (bonds, angles, torsions…).

    Attributes:
        indices: (B, k) 0-based atom indices, one row per term (static: topology carries no
            gradient).

    Implement `energy(positions, boundary) -> (B,)` or, for force-only terms,
    `force(positions, boundary) -> (B, k, D)`; `positions` has shape (B, k, D) and holds the
    raw coordinates of each term's atoms: use `boundary.vector(a, b)` for displacements.
    """

    indices: StaticArray = eqx.field(static=True, converter=_as_indices)

    def energy(self, positions: Array, boundary) -> Array:
        raise NotImplementedError

    def force(self, positions: Array, boundary) -> Array:
        raise NotImplementedError

    @property
    def has_energy(self) -> bool:
        return type(self).energy is not SpecificInteraction.energy

    @property
    def n_terms(self) -> int:
        return self.indices.shape[0]

    def __check_init__(self):
        name, n = type(self).__name__, self.n_terms
        if n and self.indices.array.min() < 0:
            raise ValueError(f"{name}: atom indices must be non-negative (they are 0-based)")
        k = type(self).atoms_per_term
        if k is not None and self.indices.shape[1] != k:
            raise ValueError(f"{name}: indices must have shape (n_terms, {k}), got {self.indices.shape}")
        if not type(self).mergeable:
            return
        for field in type(self).__dataclass_fields__:
            value = getattr(self, field)
            if field == "indices" or not hasattr(value, "shape"):
                continue
            expected = (n,) + tuple(type(self).parameter_shapes.get(field, ()))
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"{name}: {field} has shape {tuple(value.shape)} but indices has {n} rows; "
                    f"expected shape {expected} (one value per term)"
                )

    # Built-in batched types set this: terms of the same type can then be concatenated
    # (so the reference's lists of one-term `HarmonicBond(i, j, r0, k)` become one batch).
    mergeable = False
    # Optional checks for built-in types: atoms per term (columns of `indices`) and the
    # trailing shape of each per-term parameter (default: one scalar per term).
    atoms_per_term = None  # int for built-in types
    parameter_shapes = {}  # noqa: RUF012 (class attribute, not a field): name -> trailing shape


def merge_terms(terms) -> SpecificInteraction:
    """Concatenate specific interactions of one mergeable type into one batched interaction."""
    terms = list(terms)
    if not terms:
        raise ValueError("merge_terms: empty list of interactions")
    kind = type(terms[0])
    if any(type(t) is not kind for t in terms):
        names = sorted({type(t).__name__ for t in terms})
        raise TypeError(f"a list of specific interactions must hold one type, got {names}")
    if len(terms) == 1:
        return terms[0]
    if not kind.mergeable:
        raise TypeError(
            f"{kind.__name__} terms cannot be concatenated automatically; build one {kind.__name__} "
            "with all rows in `indices` instead of a list"
        )
    indices = np.concatenate([t.indices.array for t in terms], axis=0)
    fields = {}
    for name in kind.__dataclass_fields__:
        if name == "indices":
            continue
        values = [getattr(t, name) for t in terms]
        if isinstance(values[0], StaticArray):
            fields[name] = np.concatenate([v.array for v in values], axis=0)
        elif kind.__dataclass_fields__[name].metadata.get("static", False):
            if any(v != values[0] for v in values):
                raise ValueError(f"cannot merge {kind.__name__} terms with different {name}")
            fields[name] = values[0]
        else:
            fields[name] = jnp.concatenate([jnp.atleast_1d(v) for v in values])
    return kind(indices=indices, **fields)
