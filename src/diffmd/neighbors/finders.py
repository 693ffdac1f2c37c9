"""Neighbor finders: which atoms a pairwise interaction has to look at.

A neighbor list is dense and full: row i holds the indices of every atom within the list
cutoff of atom i (each pair appears in both rows), padded with N up to a fixed capacity K, so
shapes stay static inside the compiled loop. Dense rows need only gathers — no scatter-adds —
to compute forces, and the symmetric storage lets the reverse pass use gathers too (see
`diffmd.kernels.rows`). The capacity (a `Capacity`: slots per atom, and for cell lists the
cell grid and slots per cell) is chosen from the starting configuration with a margin; a list
never drops a pair silently: every build counts the neighbors it found, and a count above
capacity marks the list as overflowed. `simulate` then reallocates and reruns (eager calls)
or raises a clear error (traced calls).

The list is rebuilt on a schedule (`every` steps, as in the reference) and also whenever some
atom has moved more than half the skin (list cutoff minus interaction cutoff) since the last
build, so a stale list can never miss an interacting pair.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray, as_static
from ..space.boundaries import RectangularBoundary
from .all_pairs import all_pairs_rows, neighbor_mask
from .capacity import Capacity, auto_capacity
from .cells import BOX_TOO_SMALL, cell_build, cell_ids, native_available


class NeighborList(eqx.Module):
    """Neighbors of every atom within the list cutoff at the last build.

    Attributes:
        idx: (N, K) int32; row i lists the neighbors of atom i, padded with N.
        reference_coords: (N, D) coordinates at the last build.
        max_count: int32, the most neighbors any atom had in any build of this run.
        max_cell_count: int32, the most atoms any cell held in any build (cell lists; 0 else).
        capacity: the static shapes it was built with (`Capacity`); a cell whose box side fell
            below the list cutoff also counts as an overflow.
    """

    idx: Array
    reference_coords: Array
    max_count: Array
    max_cell_count: Array
    capacity: Capacity = eqx.field(static=True)

    @property
    def overflowed(self) -> Array:
        return (self.max_count > self.capacity.slots) | (self.max_cell_count > self.capacity.cell_slots)

    @property
    def mask(self) -> Array:
        return self.idx < self.idx.shape[0]

    def pairs(self) -> np.ndarray:
        """The listed pairs as a sorted (P, 2) numpy array with i < j (for inspection)."""
        idx = np.asarray(self.idx)
        n = idx.shape[0]
        rows = np.repeat(np.arange(n), idx.shape[1])
        cols = idx.reshape(-1)
        keep = (cols < n) & (rows < cols)
        pairs = np.stack([rows[keep], cols[keep]], axis=1)
        return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _counts(previous: NeighborList | None, count, cells):
    """Running maxima of the neighbor and cell counts over a run's builds."""
    if previous is None:
        return count, cells
    return jnp.maximum(previous.max_count, count), jnp.maximum(previous.max_cell_count, cells)


class NoNeighborFinder(eqx.Module):
    """All pairs interact (minus exclusions): O(N²) per step, fine for small systems."""

    def __check_init__(self):
        pass

    cutoff = float("inf")
    every = None
    capacity = None


class _ListFinder(eqx.Module):
    """Shared fields and capacity logic of the neighbor-list finders (see the subclasses)."""

    cutoff: float = eqx.field(static=True)
    every: int | None = eqx.field(static=True, default=None)
    ineligible: StaticArray | None = eqx.field(static=True, default=None)
    capacity: int | None = eqx.field(static=True, default=None)
    margin: float = eqx.field(static=True, default=1.25)

    def __init__(self, cutoff: float, every: int | None = None, eligible=None, capacity: int | None = None,
                 margin: float = 1.25, *, ineligible=None):
        self.cutoff = float(cutoff)
        self.every = None if every is None else int(every)
        if eligible is not None:
            eligible = np.asarray(eligible, dtype=bool)
            if eligible.ndim != 2 or eligible.shape[0] != eligible.shape[1]:
                raise ValueError(f"{type(self).__name__}: eligible must be an (N, N) matrix, got {eligible.shape}")
            i, j = np.nonzero(~(eligible & eligible.T))
            keep = i < j
            ineligible = np.stack([i[keep], j[keep]], axis=1).astype(np.int32)
        if isinstance(ineligible, StaticArray):  # e.g. from with_capacity
            ineligible = ineligible.array
        self.ineligible = None if ineligible is None else as_static(np.asarray(ineligible).reshape(-1, 2))
        self.capacity = None if capacity is None else int(capacity)
        self.margin = float(margin)

    def __check_init__(self):
        name = type(self).__name__
        if not self.cutoff > 0:
            raise ValueError(f"{name}: cutoff must be positive, got {self.cutoff}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"{name}: every must be >= 1, got {self.every}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"{name}: capacity must be >= 1, got {self.capacity}")
        if not self.margin >= 1:
            raise ValueError(f"{name}: margin must be >= 1, got {self.margin}")

    def with_capacity(self, capacity: int):
        return type(self)(self.cutoff, self.every, capacity=capacity, margin=self.margin, ineligible=self.ineligible)

    def count_neighbors(self, coords, boundary, excluded: np.ndarray) -> Array:
        """The largest number of eligible neighbors within the cutoff of any atom (int32)."""
        return jnp.max(jnp.sum(neighbor_mask(coords, boundary, self.cutoff, excluded), axis=1))

    # Capacity protocol used by `simulate`: a `Capacity` fixes every shape of the list.
    def initial_capacity(self, coords, boundary, excluded: np.ndarray) -> Capacity:
        """Capacity for concrete starting coordinates: margin × the observed need."""
        count = int(self.count_neighbors(coords, boundary, excluded))
        return Capacity(auto_capacity(count, self.margin, coords.shape[0]))

    def given_capacity(self, n_atoms: int, boundary) -> Capacity:
        """Capacity from the finder's `capacity` (slots per atom) when coordinates are traced."""
        return Capacity(min(self.capacity, max(1, n_atoms - 1)))  # an atom has at most N − 1 neighbors

    def grown_capacity(self, neighbors: NeighborList, capacity: Capacity) -> Capacity:
        """A capacity large enough for what an overflowing run observed."""
        return Capacity(auto_capacity(int(neighbors.max_count), self.margin, neighbors.idx.shape[0]))


class DistanceNeighborFinder(_ListFinder):
    """All-pairs distance check, O(N²) per rebuild: pairs closer than `cutoff`. The fastest
    finder up to a few thousand atoms; `CellListNeighborFinder` is O(N).

    Attributes:
        cutoff: list cutoff (length units); must be at least the cutoff of every interaction
            that uses the list. The difference is the skin.
        every: rebuild every `every` steps (the reference's `n_steps`); None rebuilds only
            when an atom has moved more than half the skin.
        eligible: optional (N, N) bool matrix; pairs with False are never listed (the
            reference's `nb_matrix`). Stored as the list of ineligible pairs.
        capacity: neighbor slots per atom (K); None chooses it from the starting coordinates.
        margin: capacity = margin × the most neighbors any atom has at the start (+ 4), when chosen
            automatically (1.25, as JAX MD's capacity multiplier; an overflow reallocates).
    """

    def build(self, coords: Array, boundary, excluded: np.ndarray, capacity: Capacity,
              previous: NeighborList | None = None) -> NeighborList:
        """Build the list for `coords`; `excluded` is a static (E, 2) array of excluded pairs;
        `previous` (the list this one replaces) carries the run's maximum counts."""
        coords = jax.lax.stop_gradient(coords)
        idx, count = all_pairs_rows(coords, boundary, self.cutoff, excluded, capacity.slots)
        count, cells = _counts(previous, count, jnp.int32(0))
        return NeighborList(idx, coords, count, cells, capacity)


class CellListNeighborFinder(_ListFinder):
    """O(N) neighbor lists from a cell grid: atoms are binned into cells of side ≥ `cutoff`,
    and each atom checks only the atoms of its own and the adjacent cells (3^D cells).

    The same arguments and semantics as `DistanceNeighborFinder` (the list it builds holds the
    same pairs; tests check this against brute force): rebuilt inside the compiled loop when
    an atom has moved half the skin (or every `every` steps), static capacity with overflow
    detected — too many neighbors for an atom, too many atoms in a cell, or a box shrunk below
    the grid's cell size — and reallocated and rerun by `simulate` when called eagerly, a
    clear error under tracing. Needs a periodic rectangular box with at least 3 cells per side
    (side ≥ 3 × cutoff) and fewer candidates than atoms; otherwise it checks all pairs, as
    DistanceNeighborFinder does. Cells are processed in blocks of about 4M pair checks, so
    the memory of a build stays bounded.

    Attributes: see DistanceNeighborFinder; `capacity` is neighbor slots per atom (K). The
    atom slots per cell are chosen from the starting coordinates (or from the density when
    they are traced), with the same margin. `grid`: the cells per side when the box is traced
    (None: chosen from the concrete box; (): no cells, all pairs), e.g. fixed by `sized_for`.
    """

    grid: tuple | None = eqx.field(static=True, default=None)

    def __init__(self, cutoff: float, every: int | None = None, eligible=None, capacity: int | None = None,
                 margin: float = 1.25, *, ineligible=None, grid=None):
        super().__init__(cutoff, every, eligible, capacity, margin, ineligible=ineligible)
        self.grid = None if grid is None else tuple(int(g) for g in grid)

    def with_capacity(self, capacity: int):
        return type(self)(self.cutoff, self.every, capacity=capacity, margin=self.margin, ineligible=self.ineligible,
                          grid=self.grid)

    def sized_for(self, coords, boundary, excluded: np.ndarray) -> CellListNeighborFinder:
        """This finder with the slots per atom and the cell grid of these concrete coordinates
        fixed, so lists can also be built where coordinates and box are traced."""
        capacity = self.initial_capacity(coords, boundary, excluded)
        return type(self)(self.cutoff, self.every, capacity=capacity.slots, margin=self.margin,
                          ineligible=self.ineligible, grid=capacity.grid or ())

    def initial_capacity(self, coords, boundary, excluded: np.ndarray) -> Capacity:
        n = coords.shape[0]
        grid = self._grid(boundary, n)
        if grid is None:
            return super().initial_capacity(coords, boundary, excluded)
        ids = cell_ids(boundary.wrap(coords), boundary, grid)
        per_cell = int(jnp.max(jnp.bincount(ids, length=int(np.prod(grid)))))
        cell_slots = int(math.ceil(per_cell * self.margin)) + 2
        count = int(cell_build(coords, boundary, self.cutoff, excluded, n, cell_slots, grid, count_only=True))
        return Capacity(auto_capacity(count, self.margin, n), cell_slots, grid)

    def given_capacity(self, n_atoms: int, boundary) -> Capacity:
        grid = self._grid(boundary, n_atoms)
        slots = min(self.capacity, max(1, n_atoms - 1))
        if grid is None:
            return Capacity(slots)
        mean = n_atoms / np.prod(grid)  # uniform density: Poisson occupancy, with a wide margin
        return Capacity(slots, int(math.ceil(self.margin * (mean + 5 * math.sqrt(mean) + 4))), grid)

    def grown_capacity(self, neighbors: NeighborList, capacity: Capacity) -> Capacity:
        slots, cell_slots = capacity.slots, capacity.cell_slots
        n = neighbors.idx.shape[0]
        if int(neighbors.max_count) > slots:
            slots = auto_capacity(int(neighbors.max_count), self.margin, n)
        if capacity.grid is not None and int(neighbors.max_cell_count) > cell_slots:
            if int(neighbors.max_cell_count) >= BOX_TOO_SMALL:
                raise ValueError(f"{type(self).__name__}: the box shrank below the cell grid's cell size; "
                                 "build the System again with the new box")
            cell_slots = int(math.ceil(int(neighbors.max_cell_count) * self.margin)) + 2
        return Capacity(slots, cell_slots, capacity.grid)

    def _grid(self, boundary, n_atoms: int):
        """Static cells per side, or None when cells would not pay (or are not possible)."""
        if not isinstance(boundary, RectangularBoundary):
            return None
        if isinstance(boundary.sides, jax.core.Tracer):
            if self.grid is not None:
                return self.grid or None
            raise ValueError(f"{type(self).__name__}: the cell grid needs a concrete box; build the System "
                             "outside jit/vmap, or use DistanceNeighborFinder")
        sides = np.asarray(jax.device_get(boundary.sides), dtype=np.float64)
        grid = tuple(int(c) for c in np.floor(sides / self.cutoff))
        # Below 3 per side cells would repeat. Each atom's candidates are 3^D of the cells: with
        # fewer than 2·3^D cells that is half the atoms or more, and the pure-JAX all-pairs
        # build is cheaper than its cell build; the compiled cell build still wins there (villin
        # in water, 4×4×3 cells: 55 ms against 580 for all pairs).
        compiled = native_available(jnp.zeros((1, len(grid)), boundary.sides.dtype))
        if min(grid) < 3 or (not compiled and np.prod(grid) <= 2 * 3 ** len(grid)):
            return None
        return grid

    def build(self, coords: Array, boundary, excluded: np.ndarray, capacity: Capacity,
              previous: NeighborList | None = None) -> NeighborList:
        coords = jax.lax.stop_gradient(coords)
        if capacity.grid is None:
            (idx, count), cells = all_pairs_rows(coords, boundary, self.cutoff, excluded, capacity.slots), jnp.int32(0)
        else:
            idx, count, cells = cell_build(coords, boundary, self.cutoff, excluded, capacity.slots,
                                           capacity.cell_slots, capacity.grid)
        count, cells = _counts(previous, count, cells)
        return NeighborList(idx, coords, count, cells, capacity)
