"""`System`: everything that defines a simulation except the integrator and the run length."""

from __future__ import annotations

import functools

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import concrete_or_none
from ._static import StaticArray, as_static
from .atoms import Atoms
from .boundaries import NoBoundary, RectangularBoundary
from .interactions.base import PairwiseInteraction, SpecificInteraction, merge_terms
from .loggers import Logger
from .neighbors import CellListNeighborFinder, DistanceNeighborFinder, NoNeighborFinder, _ListFinder
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
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    return StaticArray(pairs)


def _flatten_specific(specific_inters) -> tuple:
    """Accept batched interactions and, as in the reference, lists of one-term interactions."""
    out = []
    for item in specific_inters:
        if isinstance(item, (list, tuple)):
            if len(item) == 0:
                continue
            groups: dict[type, list] = {}
            for term in item:
                groups.setdefault(type(term), []).append(term)
            out.extend(merge_terms(group) for group in groups.values())
        else:
            out.append(item)
    for inter in out:
        if not isinstance(inter, SpecificInteraction):
            raise TypeError(f"specific_inters must hold SpecificInteraction objects, got {type(inter).__name__}")
    return tuple(out)


class System(eqx.Module):
    """A molecular system: atoms, state, geometry, interactions, neighbor finder and loggers.

    Attributes:
        atoms: per-atom properties (N atoms).
        coords: (N, D) coordinates, length units; D = 2 or 3.
        velocities: (N, D) velocities, length/time units (zeros if not given).
        boundary: NoBoundary or RectangularBoundary (CubicBoundary) with the same D.
        pairwise_inters: tuple of PairwiseInteraction (the reference's `general_inters`).
        specific_inters: tuple of SpecificInteraction; lists of one-term constructors
            (the reference's `specific_inter_lists`) are merged into batches.
        neighbor_finder: NoNeighborFinder(), DistanceNeighborFinder(...) or CellListNeighborFinder(...).
        loggers: dict name → Logger; records come back in `Trajectory.logs[name]`.
        units: UnitSystem (default OPENMM_UNITS; REDUCED_UNITS has k_B = 1).
        exclusions: (E, 2) atom pairs that no pairwise interaction sees (e.g. 1-2, 1-3).
        pairs_14: (S, 2) 1-4 pairs: removed from the ordinary pair sum and added back with
            each interaction's `weight_14` (no cutoff, as OpenMM's exceptions).

    Every float in the system is a differentiable leaf; topology (indices, exclusions) and
    configuration are static.
    """

    atoms: Atoms
    coords: Array
    velocities: Array
    boundary: NoBoundary | RectangularBoundary
    pairwise_inters: tuple = ()
    specific_inters: tuple = ()
    neighbor_finder: NoNeighborFinder | DistanceNeighborFinder | CellListNeighborFinder = NoNeighborFinder()
    loggers: dict = eqx.field(default_factory=dict)
    units: UnitSystem = eqx.field(static=True, default=OPENMM_UNITS)
    exclusions: StaticArray = eqx.field(static=True, default=_NO_PAIRS)
    pairs_14: StaticArray = eqx.field(static=True, default=_NO_PAIRS)

    def __init__(self, atoms, coords, boundary, velocities=None, pairwise_inters=(), specific_inters=(),
                 neighbor_finder=None, loggers=None, units=OPENMM_UNITS, exclusions=None, pairs_14=None):
        self.atoms = atoms
        self.coords = jnp.asarray(coords)
        self.velocities = jnp.zeros_like(self.coords) if velocities is None else jnp.asarray(velocities)
        self.boundary = boundary
        self.pairwise_inters = tuple(pairwise_inters)
        self.specific_inters = _flatten_specific(specific_inters)
        self.neighbor_finder = NoNeighborFinder() if neighbor_finder is None else neighbor_finder
        self.loggers = dict(loggers or {})
        self.units = units
        self.exclusions = _pair_array(exclusions)
        self.pairs_14 = _pair_array(pairs_14)

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
            raise ValueError(
                f"System: coords are {coords.shape[1]}-D but the boundary is {self.boundary.n_dims}-D"
            )
        for name, value in (("coords", coords), ("velocities", self.velocities)):
            c = concrete_or_none(value)
            if c is not None and not np.all(np.isfinite(c)):
                bad = int(np.argwhere(~np.isfinite(c))[0, 0])
                raise ValueError(f"System: {name} contain NaN or inf (first at atom {bad})")
        for inter in self.pairwise_inters:
            if not isinstance(inter, PairwiseInteraction):
                raise TypeError(f"pairwise_inters must hold PairwiseInteraction objects, got {type(inter).__name__}")
        for inter in self.specific_inters:
            if inter.n_terms and inter.indices.array.max() >= n:
                raise ValueError(
                    f"{type(inter).__name__}: atom index {inter.indices.array.max()} out of range for {n} atoms"
                )
        for name, pairs in (("exclusions", self.exclusions), ("pairs_14", self.pairs_14)):
            if len(pairs) and pairs.array.max() >= n:
                raise ValueError(f"System: {name} refer to atom {pairs.array.max()} but there are {n} atoms")
        for name, logger in self.loggers.items():
            if not isinstance(logger, Logger):
                raise TypeError(f"logger {name!r} must be a Logger, got {type(logger).__name__}")
        self._check_cutoffs()

    def _check_cutoffs(self):
        finder = self.neighbor_finder
        half_box = float("inf")  # open boundary, or a traced box: cannot check here
        if isinstance(self.boundary, RectangularBoundary) and concrete_or_none(self.boundary.sides) is not None:
            half_box = self.boundary.min_side() / 2
        for inter in self.pairwise_inters:
            rc = inter.cutoff_distance
            name = type(inter).__name__
            # No cutoff in a periodic box means nearest image only (as Molly); finite cutoffs
            # beyond half the box would silently miss images, so they are refused.
            if np.isfinite(rc) and rc > half_box:
                raise ValueError(
                    f"{name}: cutoff {rc} exceeds half the smallest box side ({half_box}); "
                    "the minimum-image convention would miss interactions"
                )
            if getattr(inter, "use_neighbors", False) and isinstance(finder, _ListFinder):
                if not np.isfinite(rc):
                    raise ValueError(
                        f"{name}(use_neighbors=True) needs a finite cutoff no larger than the neighbor "
                        f"finder's ({finder.cutoff}), e.g. cutoff=ShiftedPotentialCutoff({finder.cutoff})"
                    )
                if rc > finder.cutoff:
                    raise ValueError(f"{name}: cutoff {rc} exceeds the neighbor finder's cutoff {finder.cutoff}")
        if isinstance(finder, _ListFinder) and finder.cutoff > half_box:
            raise ValueError(
                f"{type(finder).__name__}: cutoff {finder.cutoff} exceeds half the smallest box side ({half_box})"
            )
        if isinstance(finder, _ListFinder) and finder.ineligible is not None and len(finder.ineligible):
            if finder.ineligible.array.max() >= self.n_atoms:
                raise ValueError(f"{type(finder).__name__}: eligible matrix is larger than the number of atoms")

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

    def uses_neighbor_list(self) -> bool:
        """True if some interaction reads a dynamic neighbor list."""
        return isinstance(self.neighbor_finder, _ListFinder) and any(
            getattr(inter, "use_neighbors", False) for inter in self.pairwise_inters
        )

    def excluded_pairs(self) -> StaticArray:
        """Pairs never in the ordinary pair sum: exclusions, 1-4 pairs, ineligible pairs."""
        ineligible = getattr(self.neighbor_finder, "ineligible", None)
        return _union(self.exclusions, self.pairs_14, ineligible if ineligible is not None else _NO_PAIRS)

    def neighbor_skin(self) -> float:
        """List cutoff minus the largest cutoff of the interactions that use the list."""
        cutoffs = [inter.cutoff_distance for inter in self.pairwise_inters if getattr(inter, "use_neighbors", False)]
        return self.neighbor_finder.cutoff - max(cutoffs, default=0.0)


@functools.lru_cache(maxsize=64)
def _union(*pair_lists: StaticArray) -> StaticArray:
    stacked = np.concatenate([p.array.reshape(-1, 2) for p in pair_lists], axis=0)
    return _pair_array(stacked) if len(stacked) else _NO_PAIRS


__all__ = ["System", "as_static"]
