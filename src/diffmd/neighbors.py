"""Neighbor finders: which atoms a pairwise interaction has to look at.

A neighbor list is dense and full: row i holds the indices of every atom within the list
cutoff of atom i (each pair appears in both rows), padded with N up to a fixed capacity K, so
shapes stay static inside the compiled loop. Dense rows need only gathers — no scatter-adds —
to compute forces, and the symmetric storage lets the reverse pass use gathers too (see
`energy.py`). The capacity is chosen from the starting configuration with a margin; a list
never drops a pair silently: every build counts the neighbors it found, and a count above
capacity marks the list as overflowed. `simulate` then reallocates and reruns (eager calls)
or raises a clear error (traced calls).

The list is rebuilt on a schedule (`every` steps, as in the reference) and also whenever some
atom has moved more than half the skin (list cutoff minus interaction cutoff) since the last
build, so a stale list can never miss an interacting pair.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from . import native
from ._static import StaticArray, as_static
from .boundaries import RectangularBoundary

MAX_ALL_PAIRS_ATOMS = 4096


class NeighborList(eqx.Module):
    """Neighbors of every atom within the list cutoff at the last build.

    Attributes:
        idx: (N, K) int32; row i lists the neighbors of atom i, padded with N.
        reference_coords: (N, D) coordinates at the last build.
        max_count: int32, the most neighbors any atom had in any build of this run.
        max_cell_count: int32, the most atoms any cell held in any build (cell lists; 0 else).
        cell_capacity: atom slots per cell of the cell list (static; 0 without cells). A cell
            whose box side fell below the list cutoff also counts as overflowed.
    """

    idx: Array
    reference_coords: Array
    max_count: Array
    max_cell_count: Array = eqx.field(default_factory=lambda: jnp.int32(0))
    cell_capacity: int = eqx.field(static=True, default=0)
    grid: tuple | None = eqx.field(static=True, default=None)

    @property
    def capacity(self) -> int:
        """Neighbor slots per atom (K)."""
        return self.idx.shape[1]

    @property
    def overflowed(self) -> Array:
        return (self.max_count > self.capacity) | (self.max_cell_count > self.cell_capacity)

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
        return jnp.max(jnp.sum(_neighbor_mask(coords, boundary, self.cutoff, excluded), axis=1))

    # Capacity protocol used by `simulate`: a static, hashable value that fixes every shape
    # of the list (for a DistanceNeighborFinder the slots per atom K).
    def initial_capacity(self, coords, boundary, excluded: np.ndarray):
        """Capacity for concrete starting coordinates: margin × the observed need."""
        count = int(self.count_neighbors(coords, boundary, excluded))
        return auto_capacity(count, self.margin, coords.shape[0])

    def given_capacity(self, n_atoms: int, boundary):
        """Capacity from the finder's `capacity` (slots per atom) when coordinates are traced."""
        return min(self.capacity, max(1, n_atoms - 1))  # an atom has at most N − 1 neighbors

    def capacity_of(self, neighbors: NeighborList):
        """The capacity a list was built with."""
        return neighbors.idx.shape[1]

    def grown_capacity(self, neighbors: NeighborList, capacity):
        """A capacity large enough for what an overflowing run observed."""
        return auto_capacity(int(neighbors.max_count), self.margin, neighbors.idx.shape[0])


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

    def build(self, coords: Array, boundary, excluded: np.ndarray, capacity, max_count=None,
              max_cell_count=None) -> NeighborList:
        """Build the list for `coords`; `excluded` is a static (E, 2) array of excluded pairs."""
        coords = jax.lax.stop_gradient(coords)
        idx, count = _all_pairs_rows(coords, boundary, self.cutoff, excluded, capacity)
        previous = count if max_count is None else jnp.maximum(max_count, count)
        return NeighborList(idx=idx, reference_coords=coords, max_count=previous)


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
    they are traced), with the same margin.
    """

    def initial_capacity(self, coords, boundary, excluded: np.ndarray):
        n = coords.shape[0]
        grid = self._grid(boundary, n)
        if grid is None:
            return super().initial_capacity(coords, boundary, excluded), 0, None
        cell_ids = _cell_ids(boundary.wrap(coords), boundary, grid)
        per_cell = int(jnp.max(jnp.bincount(cell_ids, length=int(np.prod(grid)))))
        cell_capacity = int(math.ceil(per_cell * self.margin)) + 2
        count = int(_cell_build(coords, boundary, self.cutoff, excluded, n, cell_capacity, grid, count_only=True))
        return auto_capacity(count, self.margin, n), cell_capacity, grid

    def given_capacity(self, n_atoms: int, boundary):
        grid = self._grid(boundary, n_atoms)
        slots = min(self.capacity, max(1, n_atoms - 1))
        if grid is None:
            return slots, 0, None
        mean = n_atoms / np.prod(grid)  # uniform density: Poisson occupancy, with a wide margin
        return slots, int(math.ceil(self.margin * (mean + 5 * math.sqrt(mean) + 4))), grid

    def grown_capacity(self, neighbors: NeighborList, capacity):
        slots, cell_capacity, grid = capacity
        n = neighbors.idx.shape[0]
        if int(neighbors.max_count) > slots:
            slots = auto_capacity(int(neighbors.max_count), self.margin, n)
        if grid is not None and int(neighbors.max_cell_count) > cell_capacity:
            if int(neighbors.max_cell_count) >= _BOX_TOO_SMALL:
                raise ValueError(f"{type(self).__name__}: the box shrank below the cell grid's cell size; "
                                 "build the System again with the new box")
            cell_capacity = int(math.ceil(int(neighbors.max_cell_count) * self.margin)) + 2
        return slots, cell_capacity, grid

    def _grid(self, boundary, n_atoms: int):
        """Static cells per side, or None when cells would not pay (or are not possible)."""
        if not isinstance(boundary, RectangularBoundary):
            return None
        if isinstance(boundary.sides, jax.core.Tracer):
            raise ValueError(f"{type(self).__name__}: the cell grid needs a concrete box; build the System "
                             "outside jit/vmap, or use DistanceNeighborFinder")
        sides = np.asarray(jax.device_get(boundary.sides), dtype=np.float64)
        grid = tuple(int(c) for c in np.floor(sides / self.cutoff))
        # Each atom's candidates are 3^D of the cells: with fewer than 2·3^D cells that is half
        # the atoms or more, and all pairs is cheaper; below 3 per side cells would repeat.
        if min(grid) < 3 or np.prod(grid) <= 2 * 3 ** len(grid):
            return None
        return grid

    def build(self, coords: Array, boundary, excluded: np.ndarray, capacity, max_count=None,
              max_cell_count=None) -> NeighborList:
        slots, cell_capacity, grid = capacity
        coords = jax.lax.stop_gradient(coords)
        if grid is None:
            (idx, count), cells = _all_pairs_rows(coords, boundary, self.cutoff, excluded, slots), jnp.int32(0)
        else:
            idx, count, cells = _cell_build(coords, boundary, self.cutoff, excluded, slots, cell_capacity, grid)
        if max_count is not None:
            count, cells = jnp.maximum(max_count, count), jnp.maximum(max_cell_count, cells)
        return NeighborList(idx=idx, reference_coords=coords, max_count=count, max_cell_count=cells,
                            cell_capacity=cell_capacity, grid=grid)

    def capacity_of(self, neighbors: NeighborList):
        return neighbors.idx.shape[1], neighbors.cell_capacity, neighbors.grid


_BOX_TOO_SMALL = 2**30  # max_cell_count marker: the box no longer holds the grid's cells


def _cell_ids(wrapped, boundary, grid) -> Array:
    """Linear cell index of each atom from its coordinates wrapped into the box (`boundary.wrap`)."""
    grid_arr = np.asarray(grid, np.int32)
    frac = wrapped / boundary.sides
    cell = jnp.clip(jnp.floor(frac * grid_arr).astype(jnp.int32), 0, grid_arr - 1)
    strides = np.cumprod((1,) + tuple(grid[:0:-1]))[::-1].astype(np.int32)  # row-major
    return jnp.sum(cell * strides, axis=1)


@functools.lru_cache(maxsize=16)
def _adjacent_cells(grid: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(n_cells, 3^D) linear indices of each cell and its periodic neighbors (all distinct
    since every side has at least 3 cells), and (n_cells, 3^D, D) the image shift, in box
    sides (−1, 0, 1), that brings each neighbor cell next to the cell across the boundary."""
    dims = len(grid)
    cells = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, dims)
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * dims, indexing="ij"), -1).reshape(-1, dims)
    unwrapped = cells[:, None, :] + offsets[None, :, :]
    neighbors = unwrapped % np.asarray(grid)
    shifts = (unwrapped - neighbors) // np.asarray(grid)  # −1, 0 or 1 per dimension
    linear = np.ravel_multi_index(tuple(neighbors[..., d] for d in range(dims)), grid).astype(np.int32)
    return linear, shifts.astype(np.int8)


def _excluded_table(excluded: np.ndarray, n: int) -> np.ndarray:
    """(N, X) excluded partners of each atom, padded with −1 (X ≥ 1)."""
    if not len(excluded):
        return np.full((n, 1), -1, np.int32)
    pairs = np.concatenate([excluded, excluded[:, ::-1]], axis=0)
    order = np.argsort(pairs[:, 0], kind="stable")
    pairs = pairs[order]
    counts = np.bincount(pairs[:, 0], minlength=n)
    table = np.full((n, max(1, counts.max())), -1, np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(pairs)) - starts[pairs[:, 0]]
    table[pairs[:, 0], slot] = pairs[:, 1]
    return table


def _cell_build(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only=False):
    """Neighbor rows from the cell grid: (idx (N, slots), most neighbors of any atom, most atoms
    in any cell), or with count_only the most neighbors of any atom. The compiled build where it
    exists (the same rows; a cell may then hold more than `cell_capacity` atoms, still reported),
    else `_cell_build_jax`."""
    if not native.cell_rows_available(coords):
        return _cell_build_jax(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only)
    n = coords.shape[0]
    table = jnp.asarray(_excluded_table(np.asarray(excluded).reshape(-1, 2), n))
    wrapped = boundary.wrap(coords)
    idx, count, most_in_cell = native.cell_rows(wrapped, _cell_ids(wrapped, boundary, grid), boundary.sides, table,
                                                grid, cutoff, 1 if count_only else slots)
    if count_only:
        return count
    return idx, count, _flag_small_cells(most_in_cell, boundary, grid, cutoff)


def _flag_small_cells(most_in_cell, boundary, grid, cutoff):
    # Cells narrower than the cutoff (a box that shrank after the grid was fixed) would miss pairs.
    too_small = jnp.any(boundary.sides / np.asarray(grid) < cutoff)
    return jnp.where(too_small, _BOX_TOO_SMALL, most_in_cell)


def _cell_build_jax(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only=False):
    """Neighbor rows from the cell grid, a block of cells at a time (pure JAX).

    Every atom of a cell has the same candidates (the atoms of the 3^D cells around it), so
    the work is organised per cell: the candidates' coordinates are gathered once per cell
    and compared with the cell's own atoms as a dense (M, 3^D·M) block, which vectorises
    (gathering per atom was 3× slower). Rows are then handed back to atoms by their slot.

    Returns (idx (N, slots), most neighbors of any atom, most atoms in any cell) — or, with
    count_only, the most neighbors of any atom."""
    n, dims = coords.shape
    n_cells = int(np.prod(grid))
    m = cell_capacity
    wrapped = boundary.wrap(coords)
    cell_of = _cell_ids(wrapped, boundary, grid)
    order = jnp.argsort(cell_of).astype(jnp.int32)
    sorted_cells = cell_of[order]
    cell_range = jnp.arange(n_cells, dtype=jnp.int32)
    starts = jnp.searchsorted(sorted_cells, cell_range, side="left").astype(jnp.int32)
    counts = jnp.searchsorted(sorted_cells, cell_range, side="right").astype(jnp.int32) - starts
    slot = jnp.arange(m, dtype=jnp.int32)
    members = jnp.where(slot < counts[:, None], order[jnp.minimum(starts[:, None] + slot, n - 1)], n)  # (cells, M)
    adjacent_np, shifts_np = _adjacent_cells(tuple(grid))
    adjacent, n_adjacent = jnp.asarray(adjacent_np), adjacent_np.shape[1]
    excluded = np.asarray(excluded).reshape(-1, 2)
    table = jnp.asarray(_excluded_table(excluded, n + 1))  # row n: padding
    # Coordinates wrapped into the box: a neighbor cell across the boundary is then exactly
    # one box side away, so distances need no minimum-image rounding.
    x_t = jnp.concatenate([wrapped.T, jnp.zeros((dims, 1), coords.dtype)], axis=1)  # column n: padding
    cutoff2 = cutoff * cutoff
    n_candidates = n_adjacent * m

    def rows(cells):
        """Neighbor rows of the atoms in a block of cells: (B, M, slots), counts (B, M)."""
        b = cells.shape[0]
        own = members[cells]  # (B, M)
        candidates = members[adjacent[cells]].reshape(b, n_candidates)  # (B, C)
        shift = jnp.asarray(shifts_np)[cells].astype(coords.dtype) * boundary.sides  # (B, 3^D, D)
        shift = jnp.repeat(jnp.moveaxis(shift, 2, 0), m, axis=2)  # (D, B, C)
        x_c = x_t[:, candidates] + shift
        d = x_c[:, :, None, :] - x_t[:, own][..., None]  # (D, B, M, C)
        mask = (jnp.sum(d * d, axis=0) < cutoff2) & (candidates[:, None, :] < n) & (own[:, :, None] < n)
        mask = mask & (candidates[:, None, :] != own[:, :, None])
        if len(excluded):
            partners = table[own]  # (B, M, X) excluded partners, −1 padded
            mask = mask & ~jnp.any(candidates[:, None, :, None] == partners[:, :, None, :], axis=3)
        words = pack_rows(mask)  # (B, M, W): the (B, M, C) mask itself is never stored
        count = jnp.sum(jax.lax.population_count(words), axis=2, dtype=jnp.int32)
        if count_only:
            return count
        pos = compact_words(words.reshape(b * m, -1), slots, n_candidates).reshape(b, m, slots)
        picked = jnp.take_along_axis(candidates[:, None, :], jnp.minimum(pos, n_candidates - 1), axis=2)
        return jnp.where(pos < n_candidates, picked, n).astype(jnp.int32), count

    per_block = max(1, min(n_cells, (4 * 2**20) // max(1, m * n_candidates)))  # ~4M pair checks per block
    n_blocks = -(-n_cells // per_block)
    cells = jnp.minimum(jnp.arange(n_blocks * per_block, dtype=jnp.int32), n_cells - 1).reshape(n_blocks, per_block)
    out = jax.lax.map(rows, cells)
    if count_only:
        return jnp.max(out)
    cell_rows, count = out
    cell_rows = cell_rows.reshape(-1, slots)
    # atom i sits in cell cell_of[i] at slot (its rank in the sorted order − the cell's start)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    idx = cell_rows[cell_of * m + jnp.minimum(rank - starts[cell_of], m - 1)]
    return idx, jnp.max(count), _flag_small_cells(jnp.max(counts), boundary, grid, cutoff)


def _all_pairs_rows(coords, boundary, cutoff, excluded: np.ndarray, slots: int):
    """(neighbor rows (N, slots), most neighbors of any atom) from the all-pairs mask."""
    mask = _neighbor_mask(coords, boundary, cutoff, excluded)
    return compact_rows(mask, slots), jnp.max(jnp.sum(mask, axis=1, dtype=jnp.int32))


def _neighbor_mask(coords, boundary, cutoff, excluded: np.ndarray) -> Array:
    """(N, N) bool: i ≠ j, within cutoff, not excluded (symmetric)."""
    n = coords.shape[0]
    x = coords.T  # component by component (D, N): vectorises far better than (N, N, 3)
    d = boundary.vector_components(x[:, :, None], x[:, None, :])
    r2 = jnp.sum(d * d, axis=0)
    mask = (r2 < cutoff * cutoff) & ~jnp.eye(n, dtype=bool)
    if len(excluded):
        mask = mask.at[excluded[:, 0], excluded[:, 1]].set(False).at[excluded[:, 1], excluded[:, 0]].set(False)
    return mask


def pack_rows(mask: Array) -> Array:
    """Pack a bool (..., C) mask into uint32 words (..., ⌈C/32⌉), bit b of word w = column 32w + b."""
    cols = mask.shape[-1]
    n_words = -(-cols // 32)
    mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, n_words * 32 - cols)])
    shifted = mask.reshape(mask.shape[:-1] + (n_words, 32)).astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32)
    return jnp.sum(shifted, axis=-1, dtype=jnp.uint32)


def compact_rows(mask: Array, capacity: int) -> Array:
    """Column indices of the True entries of each row of a bool (R, C) mask, in ascending
    order, in `capacity` slots padded with C (entries beyond `capacity` are dropped; callers
    count them to detect overflow). See `compact_words`."""
    return compact_words(pack_rows(mask), capacity, mask.shape[1])


def compact_words(words: Array, capacity: int, cols: int) -> Array:
    """`compact_rows` on rows already packed into uint32 words (R, W) by `pack_rows`.

    Slot k finds its word from the running popcount and its bit by a 5-step binary search on
    popcounts — O(R·W + R·K) work, vectorised (8× faster on CPU than a `nonzero` per row).
    """
    rows, n_words = words.shape
    popcount = jax.lax.population_count(words).astype(jnp.int32)
    through = jnp.cumsum(popcount, axis=1)  # set bits in words 0..w
    k = jnp.arange(capacity, dtype=jnp.int32)
    # word_of_k[r, k] = number of words of row r whose set bits all come before slot k: mark
    # each word's end slot and take a running sum (a scatter of R·W, not R·K binary searches)
    row_ids = jnp.broadcast_to(jnp.arange(rows, dtype=jnp.int32)[:, None], through.shape)
    ends = jnp.zeros((rows, capacity + 1), jnp.int32).at[row_ids, jnp.minimum(through, capacity)].add(1)
    word_of_k = jnp.cumsum(ends, axis=1)[:, :capacity]
    w = jnp.minimum(word_of_k, n_words - 1)
    word = jnp.take_along_axis(words, w, axis=1)
    rank = k[None, :] - jnp.take_along_axis(through - popcount, w, axis=1)  # wanted set bit within word
    one = jnp.uint32(1)
    bit = jnp.zeros(rank.shape, jnp.uint32)
    for step in (16, 8, 4, 2, 1):  # largest bit position with at most `rank` set bits below it
        trial = bit + jnp.uint32(step)
        below = jax.lax.population_count(word & ((one << trial) - one)).astype(jnp.int32)
        bit = jnp.where(below <= rank, trial, bit)
    column = w * 32 + bit.astype(jnp.int32)
    return jnp.where((word_of_k < n_words) & (column < cols), column, cols).astype(jnp.int32)


def auto_capacity(count: int, margin: float, n_atoms: int) -> int:
    """Neighbor slots per atom for a start whose most crowded atom has `count` neighbors:
    margin × count plus a few, never more than N − 1."""
    return int(max(1, min(n_atoms - 1, math.ceil(count * margin) + 4)))


@functools.lru_cache(maxsize=32)
def all_neighbors(n_atoms: int, excluded: StaticArray) -> np.ndarray | None:
    """Every other atom of each atom except the excluded ones, as a static (N, N−1) array
    padded with N; None when nothing is excluded (the list is then made in-graph)."""
    if n_atoms > MAX_ALL_PAIRS_ATOMS:
        raise ValueError(
            f"{n_atoms} atoms is too many for all-pairs interactions (limit {MAX_ALL_PAIRS_ATOMS}); "
            "use a neighbor finder and interactions with use_neighbors=True"
        )
    if not len(excluded):
        return None
    idx = (np.arange(n_atoms)[:, None] + 1 + np.arange(n_atoms - 1)[None, :]) % n_atoms
    ex = excluded.array
    blocked = np.zeros((n_atoms, n_atoms), bool)
    blocked[ex[:, 0], ex[:, 1]] = True
    blocked[ex[:, 1], ex[:, 0]] = True
    idx = np.where(blocked[np.arange(n_atoms)[:, None], idx], n_atoms, idx)
    return np.sort(idx, axis=1).astype(np.int32)


def all_neighbors_array(n_atoms: int, excluded: StaticArray) -> Array:
    """(N, N−1) neighbor array of the all-pairs interactions (see `all_neighbors`)."""
    static = all_neighbors(n_atoms, excluded)
    if static is not None:
        return jnp.asarray(static)
    rows = jnp.arange(n_atoms, dtype=jnp.int32)[:, None]
    return (rows + 1 + jnp.arange(n_atoms - 1, dtype=jnp.int32)[None, :]) % n_atoms
