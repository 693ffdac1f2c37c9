"""`System`: everything that defines a simulation except the integrator and the run length."""

from __future__ import annotations

import functools

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from jax import Array

from ._checks import concrete_or_none
from ._static import StaticArray
from .atoms import Atoms
from .dynamics.constraints import Constraints, NoConstraints
from .forces.base import BondedForce, BondedInteraction, GlobalInteraction, _Pairwise, merge_terms
from .loggers import Logger
from .neighbors import CellListNeighborFinder, DistanceNeighborFinder, NoNeighborFinder
from .neighbors.finders import _ListFinder
from .space.boundaries import NoBoundary, RectangularBoundary
from .units import OPENMM_UNITS, UnitSystem

_NO_PAIRS = StaticArray(np.zeros((0, 2), np.int32))


def _pair_array(pairs) -> StaticArray:
    """(E, 2) pair list normalised to i < j, sorted, without duplicates."""
    if pairs is None:
        return _NO_PAIRS
    pairs = np.asarray(pairs.array if isinstance(pairs, StaticArray) else pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return _NO_PAIRS
    if np.any(pairs[:, 0] == pairs[:, 1]):
        raise ValueError("a pair list contains an atom paired with itself")
    return StaticArray(np.unique(np.sort(pairs, axis=1), axis=0))


def _flatten_bonded(bonded_inters) -> tuple:
    """Accept batched terms and, as in the reference, lists of one-term terms (merged by type)."""
    out = []
    for item in bonded_inters:
        if isinstance(item, (list, tuple)):
            groups: dict[type, list] = {}
            for term in item:
                groups.setdefault(type(term), []).append(term)
            out.extend(merge_terms(group) for group in groups.values())
        else:
            out.append(item)
    for term in out:
        if not isinstance(term, (BondedInteraction, BondedForce)):
            raise TypeError(f"bonded_inters must hold BondedInteraction or BondedForce objects, got {type(term).__name__}")
    return tuple(out)


class System(eqx.Module):
    """A molecular system: atoms, state, geometry, interactions, neighbor finder and loggers.

    Attributes:
        atoms: per-atom properties (N atoms).
        coords: (N, D) coordinates, length units; D = 2 or 3.
        velocities: (N, D) velocities, length/time units (zeros if not given).
        boundary: NoBoundary or RectangularBoundary (CubicBoundary) with the same D.
        pairwise_inters: pairwise terms (`PairwiseInteraction`, `PairwiseForce`; the
            reference's `general_inters`). Those sharing a neighbor list are evaluated together.
        bonded_inters: bonded terms (`BondedInteraction`, `BondedForce`; the reference's
            `specific_inter_lists`); lists of one-term constructors are merged into batches.
        global_inters: terms that see the whole system (`GlobalInteraction`).
        neighbor_finder: NoNeighborFinder(), DistanceNeighborFinder(...) or CellListNeighborFinder(...).
        loggers: dict name → Logger; records come back in `Trajectory.logs[name]`.
        units: UnitSystem (default OPENMM_UNITS; REDUCED_UNITS has k_B = 1).
        exclusions: (E, 2) atom pairs that no pairwise term sees (e.g. 1-2, 1-3 pairs). The
            pairs of bonded terms that replace the ordinary pair term (`NonbondedExceptions`)
            are excluded too.
        pairs_14: (S, 2) 1-4 pairs: removed from the ordinary pair sum and added back with
            each pairwise term's `weight_14` (no cutoff).
        constraints: the constraint slot every integrator applies (`NoConstraints()` by default).
        remove_com_motion: remove the centre-of-mass velocity after every step (OpenMM's
            CMMotionRemover); D degrees of freedom fewer.
        force_field: for a System made by `diffmd.ForceField.create_system`, the force field's
            numbers and the index of the entry behind each of the System's (`with_parameters`).

    Every float in the system is a differentiable leaf; topology (indices, exclusions, atom
    types) and configuration are static.
    """

    atoms: Atoms
    coords: Array
    velocities: Array
    boundary: NoBoundary | RectangularBoundary
    pairwise_inters: tuple = ()
    bonded_inters: tuple = ()
    global_inters: tuple = ()
    neighbor_finder: NoNeighborFinder | DistanceNeighborFinder | CellListNeighborFinder = NoNeighborFinder()
    loggers: dict = eqx.field(default_factory=dict)
    units: UnitSystem = eqx.field(static=True, default=OPENMM_UNITS)
    exclusions: StaticArray = eqx.field(static=True, default=_NO_PAIRS)
    pairs_14: StaticArray = eqx.field(static=True, default=_NO_PAIRS)
    constraints: Constraints = NoConstraints()
    remove_com_motion: bool = eqx.field(static=True, default=False)
    force_field: eqx.Module | None = None

    def __init__(self, atoms, coords, boundary, velocities=None, pairwise_inters=(), bonded_inters=(),
                 global_inters=(), neighbor_finder=None, loggers=None, units=OPENMM_UNITS, exclusions=None,
                 pairs_14=None, constraints=None, remove_com_motion=False, force_field=None):
        self.atoms = atoms
        self.coords = jnp.asarray(coords)
        self.velocities = jnp.zeros_like(self.coords) if velocities is None else jnp.asarray(velocities)
        self.boundary = boundary
        self.pairwise_inters = tuple(pairwise_inters)
        self.bonded_inters = _flatten_bonded(bonded_inters)
        self.global_inters = tuple(global_inters)
        self.neighbor_finder = NoNeighborFinder() if neighbor_finder is None else neighbor_finder
        self.loggers = dict(loggers or {})
        self.units = units
        self.exclusions = _pair_array(exclusions)
        self.pairs_14 = _pair_array(pairs_14)
        self.constraints = NoConstraints() if constraints is None else constraints
        self.remove_com_motion = bool(remove_com_motion)
        self.force_field = force_field

    def __check_init__(self):
        if not isinstance(self.atoms, Atoms):
            raise TypeError(f"System: atoms must be an Atoms, got {type(self.atoms).__name__}")
        coords, n = self.coords, self.atoms.n_atoms
        if coords.ndim != 2 or coords.shape[1] not in (2, 3):
            raise ValueError(f"System: coords must have shape (N, 2) or (N, 3), got {coords.shape}")
        if coords.shape[0] != n:
            raise ValueError(f"System: coords has {coords.shape[0]} rows but atoms has {n} atoms")
        if not jnp.issubdtype(coords.dtype, jnp.floating):
            raise TypeError(f"System: coords must be floating point, got {coords.dtype}")
        if self.velocities.shape != coords.shape:
            raise ValueError(f"System: velocities shape {self.velocities.shape} != coords shape {coords.shape}")
        if self.boundary.n_dims != coords.shape[1]:
            raise ValueError(f"System: coords are {coords.shape[1]}-D but the boundary is {self.boundary.n_dims}-D")
        for name, value in (("coords", coords), ("velocities", self.velocities)):
            c = concrete_or_none(value)
            if c is not None and not np.all(np.isfinite(c)):
                bad = int(np.argwhere(~np.isfinite(c))[0, 0])
                raise ValueError(f"System: {name} contain NaN or inf (first at atom {bad})")
        for term in self.pairwise_inters:
            if not isinstance(term, _Pairwise):
                raise TypeError(f"pairwise_inters must hold PairwiseInteraction or PairwiseForce objects, "
                                f"got {type(term).__name__}")
            term.require_atom_params(self.atoms)  # names any per-atom parameter the atoms lack
        for term in self.bonded_inters:
            if term.n_terms and term.indices.array.max() >= n:
                raise ValueError(f"{type(term).__name__}: atom index {term.indices.array.max()} out of range for {n} atoms")
        for term in self.global_inters:
            if not isinstance(term, GlobalInteraction):
                raise TypeError(f"global_inters must hold GlobalInteraction objects, got {type(term).__name__}")
        for name, pairs in (("exclusions", self.exclusions), ("pairs_14", self.pairs_14)):
            if len(pairs) and pairs.array.max() >= n:
                raise ValueError(f"System: {name} refer to atom {pairs.array.max()} but there are {n} atoms")
        if not isinstance(self.constraints, Constraints):
            raise TypeError(f"System: constraints must be a Constraints, got {type(self.constraints).__name__}")
        for name, logger in self.loggers.items():
            if not isinstance(logger, Logger):
                raise TypeError(f"logger {name!r} must be a Logger, got {type(logger).__name__}")
        self._check_cutoffs()

    def _check_cutoffs(self):
        finder = self.neighbor_finder
        half_box = float("inf")  # open boundary, or a traced box: checked inside the run instead
        if isinstance(self.boundary, RectangularBoundary) and concrete_or_none(self.boundary.sides) is not None:
            half_box = self.boundary.min_side() / 2
        for term in self.pairwise_inters:
            rc = term.cutoff_distance
            name = type(term).__name__
            # No cutoff in a periodic box means nearest image only (as Molly); finite cutoffs
            # beyond half the box would silently miss images, so they are refused.
            if np.isfinite(rc) and rc > half_box:
                raise ValueError(f"{name}: cutoff {rc} exceeds half the smallest box side ({half_box}); "
                                 "the minimum-image convention would miss interactions")
            if term.use_neighbors and isinstance(finder, _ListFinder):
                if not np.isfinite(rc):
                    raise ValueError(
                        f"{name}(use_neighbors=True) needs a finite cutoff no larger than the neighbor "
                        f"finder's ({finder.cutoff}), e.g. cutoff=ShiftedPotentialCutoff({finder.cutoff})")
                if rc > finder.cutoff:
                    raise ValueError(f"{name}: cutoff {rc} exceeds the neighbor finder's cutoff {finder.cutoff}")
        if isinstance(finder, _ListFinder) and finder.cutoff > half_box:
            raise ValueError(f"{type(finder).__name__}: cutoff {finder.cutoff} exceeds half the smallest box side "
                             f"({half_box})")
        if isinstance(finder, _ListFinder) and finder.ineligible is not None and len(finder.ineligible):
            if finder.ineligible.array.max() >= self.n_atoms:
                raise ValueError(f"{type(finder).__name__}: eligible matrix is larger than the number of atoms")

    def with_parameters(self, parameters):
        """This System with its force-field numbers taken from `parameters` (a pytree shaped as
        `system.force_field.parameters`, e.g. being trained): differentiable, traceable.

            grad = jax.grad(lambda p: loss(system.with_parameters(p)))(system.force_field.parameters)
        """
        if self.force_field is None:
            raise ValueError("with_parameters: this System was not made by diffmd.ForceField.create_system")
        return self.force_field.bind(self, parameters)

    # ---- derived, static information -------------------------------------------------

    @property
    def n_atoms(self) -> int:
        return self.coords.shape[0]

    @property
    def n_dims(self) -> int:
        return self.coords.shape[1]

    @property
    def dtype(self):
        return self.coords.dtype

    @property
    def degrees_of_freedom(self) -> int:
        """N·D, less the constraints and (if it is removed) the centre-of-mass motion."""
        removed = self.constraints.n_removed(self.n_dims) + (self.n_dims if self.remove_com_motion else 0)
        return self.n_atoms * self.n_dims - removed

    def uses_neighbor_list(self) -> bool:
        """True if some interaction reads a dynamic neighbor list."""
        return isinstance(self.neighbor_finder, _ListFinder) and any(t.use_neighbors for t in self.pairwise_inters)

    def largest_cutoff(self) -> float:
        """The largest finite cutoff of the pairwise terms and the neighbor finder (0 if none)."""
        cutoffs = [t.cutoff_distance for t in self.pairwise_inters] + [getattr(self.neighbor_finder, "cutoff", 0.0)]
        return max([c for c in cutoffs if np.isfinite(c)], default=0.0)

    def excluded_pairs(self) -> StaticArray:
        """Pairs never in the ordinary pair sum: exclusions, 1-4 pairs, exception pairs of
        bonded terms, ineligible pairs."""
        ineligible = getattr(self.neighbor_finder, "ineligible", None)
        replaced = [StaticArray(p) for p in (t.excluded_pairs() for t in self.bonded_inters) if p is not None]
        return _union(self.exclusions, self.pairs_14, ineligible if ineligible is not None else _NO_PAIRS, *replaced)

    def molecules(self) -> np.ndarray:
        """(N,) int molecule index of every atom, molecules numbered by their first atom: the
        connected groups of atoms joined by bonded terms, exclusions, 1-4 pairs or distance
        constraints (what a barostat keeps rigid). Static."""
        return _molecule_labels(self.n_atoms, self._topology_links())

    def _topology_links(self) -> StaticArray:
        links = [self.exclusions.array, self.pairs_14.array]
        for term in self.bonded_inters:
            idx = np.asarray(term.indices.array)
            if idx.ndim == 2 and idx.shape[1] > 1:
                links += [idx[:, [k, k + 1]] for k in range(idx.shape[1] - 1)]
        pairs = getattr(self.constraints, "pairs", None)
        if pairs is not None:
            links.append(np.asarray(getattr(pairs, "array", pairs)))
        return StaticArray(np.concatenate([np.asarray(a).reshape(-1, 2) for a in links]), dtype=np.int64)

    def neighbor_skin(self) -> float:
        """List cutoff minus the largest cutoff of the interactions that use the list."""
        cutoffs = [t.cutoff_distance for t in self.pairwise_inters if t.use_neighbors]
        return self.neighbor_finder.cutoff - max(cutoffs, default=0.0)


@functools.lru_cache(maxsize=16)
def _molecule_labels(n_atoms: int, links: StaticArray) -> np.ndarray:
    """Connected components of the (N, N) graph whose edges are `links`, numbered in order of
    each component's first atom."""
    pairs = links.array
    graph = scipy.sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms))
    labels = scipy.sparse.csgraph.connected_components(graph, directed=False)[1]
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(len(first), np.int64)
    renumber[np.argsort(first)] = np.arange(len(first))
    labels = renumber[labels]
    labels.setflags(write=False)
    return labels


@functools.lru_cache(maxsize=64)
def _union(*pair_lists: StaticArray) -> StaticArray:
    stacked = np.concatenate([p.array.reshape(-1, 2) for p in pair_lists], axis=0)
    return _pair_array(stacked) if len(stacked) else _NO_PAIRS


__all__ = ["System"]
