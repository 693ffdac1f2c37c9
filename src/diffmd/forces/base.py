"""The three kinds of term, and what the engine asks of each.

* **Pairwise** (`PairwiseInteraction`): an energy V(r, p_i, p_j) between every eligible pair
  of atoms (or every pair on the neighbor list), from the distance r and the per-atom
  parameters of the two atoms. The cutoff scheme is applied by the base class; all pairwise
  terms that share a list are summed in one pass over its rows, by a fused kernel generated
  from the energies (`diffmd.kernels`). `PairwiseForce` is the force-only variant.
* **Bonded** (`BondedInteraction`): energies of fixed tuples of atoms (bonds, angles,
  torsions, CMAP), batched: `energy(positions (B, k, D), boundary) -> (B,)`. `BondedForce` is
  the force-only variant (the reference's `NNBond`).
* **Global** (`GlobalInteraction`): one energy from all coordinates, the box and the atoms
  (reciprocal-space Ewald/PME, implicit solvent, a neural-network potential, an external
  field).

Forces of energy-based terms are always −∇E (autodiff, or derivatives generated from the
energy); nothing here is differentiated by hand.
"""

from __future__ import annotations

import abc
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray, as_static
from .cutoffs import NoCutoff


@jax.tree_util.register_pytree_node_class
class Params:
    """The per-atom parameters of one side of a pair, by name: `p.sigma`, `p["sigma"]`.

    Inside the pure-JAX kernel each value is an array (one entry per pair); inside a compiled
    kernel, a scalar. A pair energy should use only elementwise operations on them.
    """

    __slots__ = ("_values",)

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no per-atom parameter {name!r} here (there are: {', '.join(self._values)}); "
                                 "list it in the interaction's atom_params") from None

    def __getitem__(self, name: str):
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def tree_flatten(self):
        names = tuple(self._values)
        return tuple(self._values[k] for k in names), names

    @classmethod
    def tree_unflatten(cls, names, values):
        return cls(dict(zip(names, values)))


class _Pairwise(eqx.Module):
    """What the two pairwise kinds share: cutoff, neighbor-list use, 1-4 weight, atom_params.

    Subclasses declare `cutoff`, `use_neighbors` (static) and `weight_14` as fields to make
    them settable; otherwise the class defaults below apply (no cutoff, all pairs, full 1-4).
    """

    cutoff = NoCutoff()
    use_neighbors = False
    weight_14 = 1.0
    # Names of the per-atom parameters the pair function reads (from `Atoms`). Class
    # attributes here are not annotated: equinox would make annotated ones fields.
    atom_params = ()

    @property
    def cutoff_distance(self) -> float:
        return self.cutoff.distance

    def atom_values(self, atoms) -> dict[str, Array]:
        """Per-atom arrays the pair function reads, by name. The default takes `atom_params`
        from the atoms; override it to precompute per atom what would otherwise be computed
        per pair (LennardJones hands over √ε, so ε_ij = √ε_i √ε_j needs no square root)."""
        self.require_atom_params(atoms)
        return {name: atoms[name] for name in self.atom_params}

    def require_atom_params(self, atoms) -> None:
        """Raise an error naming the per-atom parameters in `atom_params` the atoms lack."""
        missing = [name for name in self.atom_params if name not in atoms]
        if missing:
            raise ValueError(f"{type(self).__name__} needs per-atom {', '.join(map(repr, missing))}, which the "
                             f"Atoms do not have (they have {', '.join(atoms.names)})")

    @abc.abstractmethod
    def value_and_scale(self, r: Array, p_i: Params, p_j: Params) -> tuple[Array, Array]:
        """(V, s): the pair's energy and s = V'(r)/r with the cutoff applied; the force on atom
        i is s·(x_j − x_i)."""

    def value_and_scale_14(self, r: Array, p_i: Params, p_j: Params) -> tuple[Array, Array]:
        """(V, s) of a 1-4 pair before `weight_14`: no cutoff (as OpenMM's exceptions)."""
        raise NotImplementedError

    def value_and_scale_r2(self, r2: Array, p_i: Params, p_j: Params) -> tuple[Array, Array]:
        """(V, s) from the squared distance r² > 0, what the compiled kernels evaluate: through
        r = √r² unless the potential has `energy_r2` and its cutoff needs no r."""
        return self.value_and_scale(jnp.sqrt(r2), p_i, p_j)


class PairwiseInteraction(_Pairwise):
    """Base class for pair potentials: implement `energy(r, p_i, p_j)`.

    `r` is the distance (length units), `p_i` and `p_j` the `Params` of the two atoms (the
    names in `atom_params`, or what `atom_values` returns); return the raw energy V(r) —
    the cutoff is applied here. Write V with elementwise JAX operations: the same function is
    evaluated on arrays by the pure-JAX kernel and traced into a compiled, fused kernel with
    its derivatives (`diffmd.kernels`). V must be symmetric: V(r, p_i, p_j) = V(r, p_j, p_i).
    """

    @abc.abstractmethod
    def energy(self, r: Array, p_i: Params, p_j: Params) -> Array:
        """Raw pair energy V(r) (energy units), elementwise."""

    def energy_14(self, r: Array, p_i: Params, p_j: Params) -> Array:
        """Raw energy of a 1-4 pair before `weight_14` (default: `energy`)."""
        return self.energy(r, p_i, p_j)

    def pair_energy(self, r: Array, p_i: Params, p_j: Params) -> Array:
        """Energy of each pair with the cutoff applied."""
        return self.cutoff.apply(lambda rr: self.energy(rr, p_i, p_j), r)

    def value_and_scale(self, r, p_i, p_j):
        return _value_and_scale(lambda rr: self.pair_energy(rr, p_i, p_j), r)

    def value_and_scale_14(self, r, p_i, p_j):
        return _value_and_scale(lambda rr: self.energy_14(rr, p_i, p_j), r)

    def energy_r2(self, r2: Array, p_i: Params, p_j: Params) -> Array | None:
        """Optional: the raw energy as a function of r² (equal to `energy(√r², …)`), or None (the
        default). Potentials with only even powers of r (Lennard-Jones, Mie, soft sphere) define
        it, so that under a cutoff that needs no r (none, plain, shifted potential) the compiled
        kernel takes no square root: s = V'(r)/r = 2 dV/d(r²), one division per pair."""
        return None

    def value_and_scale_r2(self, r2, p_i, p_j):
        apply_r2 = getattr(self.cutoff, "apply_r2", None)
        # eval_shape asks whether there is an r² form without tracing it into the program
        if apply_r2 is None or jax.eval_shape(lambda: self.energy_r2(r2, p_i, p_j)) is None:
            return super().value_and_scale_r2(r2, p_i, p_j)
        value, slope = jax.jvp(lambda uu: apply_r2(lambda w: self.energy_r2(w, p_i, p_j), uu),
                               (r2,), (jnp.ones_like(r2),))
        return value, 2.0 * slope


class PairwiseForce(_Pairwise):
    """Base class for force-only pair interactions (no energy): implement
    `force(r, p_i, p_j)`, the force magnitude along the pair axis, positive when repulsive.
    Zero beyond the cutoff distance."""

    @abc.abstractmethod
    def force(self, r: Array, p_i: Params, p_j: Params) -> Array:
        """Force magnitude (energy/length), positive when repulsive, elementwise."""

    def value_and_scale(self, r, p_i, p_j):
        inside = r < self.cutoff_distance
        safe = jnp.where(inside, r, 1.0)
        return jnp.zeros_like(r), jnp.where(inside, -self.force(safe, p_i, p_j) / safe, 0.0)

    def value_and_scale_14(self, r, p_i, p_j):
        return jnp.zeros_like(r), -self.force(r, p_i, p_j) / r


def _value_and_scale(energy, r):
    """(V(r), V'(r)/r) by forward mode (elementwise: no gathers are differentiated)."""
    value, slope = jax.jvp(energy, (r,), (jnp.ones_like(r),))
    return value, slope / r


# ---- bonded --------------------------------------------------------------------------------


def _as_indices(values) -> StaticArray:
    indices = as_static(values)
    if indices.array.ndim != 2:
        raise ValueError(f"indices must have shape (n_terms, atoms_per_term), got {indices.shape}")
    return indices


class _Bonded(eqx.Module):
    """What the two bonded kinds share: `indices` (B, k), 0-based and static (topology has no
    gradient), and the checks and merging of the built-in batched types."""

    indices: StaticArray = eqx.field(static=True, converter=_as_indices)

    # Built-in batched types set these: terms of one type can be concatenated (so the
    # reference's lists of one-term `HarmonicBond(i, j, r0, k)` become one batch), with `k`
    # atoms per term and per-term parameters of the given trailing shapes (default scalar).
    mergeable = False
    atoms_per_term = None
    parameter_shapes = {}  # noqa: RUF012

    @property
    def n_terms(self) -> int:
        return self.indices.shape[0]

    def excluded_pairs(self) -> np.ndarray | None:
        """(E, 2) pairs whose ordinary pair term this term replaces (OpenMM's exceptions), or None."""
        return None

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


class BondedInteraction(_Bonded):
    """Base class for energies of listed tuples of atoms: implement
    `energy(positions, boundary) -> (B,)`, where `positions` (B, k, D) holds the raw
    coordinates of each term's atoms (use `boundary.vector(a, b)` for displacements, or the
    helpers in `diffmd.space`)."""

    @abc.abstractmethod
    def energy(self, positions: Array, boundary) -> Array:
        """(B,) energies, one per term."""


class BondedForce(_Bonded):
    """Base class for force-only bonded terms (the reference's `NNBond`): implement
    `force(positions, boundary) -> (B, k, D)`, the force on each atom of each term."""

    @abc.abstractmethod
    def force(self, positions: Array, boundary) -> Array:
        """(B, k, D) forces."""


def merge_terms(terms):
    """Concatenate bonded terms of one mergeable type into one batched term."""
    terms = list(terms)
    if not terms:
        raise ValueError("merge_terms: empty list of interactions")
    kind = type(terms[0])
    if any(type(t) is not kind for t in terms):
        names = sorted({type(t).__name__ for t in terms})
        raise TypeError(f"a list of bonded interactions must hold one type, got {names}")
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


# ---- global --------------------------------------------------------------------------------


class GlobalInteraction(eqx.Module):
    """Base class for terms that see the whole system: implement
    `energy(coords (N, D), boundary, atoms) -> scalar`. Forces are −∇E by autodiff."""

    @abc.abstractmethod
    def energy(self, coords: Array, boundary, atoms) -> Array:
        """Scalar energy (energy units)."""
