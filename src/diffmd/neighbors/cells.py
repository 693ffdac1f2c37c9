"""Cell-list builds: atoms binned into cells of side ≥ the list cutoff, each compared with the
atoms of the 3^D cells around its own — as C++ where the compiled kernels exist
(`_native/cell_rows.cc`), else in pure JAX (the reference, which gives the same rows in the
same order)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ..kernels import build
from .compaction import compact_words, pack_rows


def native_available(coords) -> bool:
    """Whether the compiled cell-list build covers these coordinates (CPU, 2-D/3-D, f32/f64)."""
    return (coords.dtype in (jnp.float32, jnp.float64) and coords.shape[-1] in (2, 3)
            and jax.default_backend() == "cpu" and build.available())


def native_cell_rows(wrapped, cell_of, sides, excluded_table, grid: tuple, cutoff: float, slots: int):
    """Neighbor rows from a cell grid with the compiled build (`_native/cell_rows.cc`): the rows
    of the pure-JAX cell build, in the same order.

    wrapped: (N, D) coordinates wrapped into the box; cell_of: (N,) int32 linear cell index
    (row-major over `grid`, at least 3 cells per side); sides: (D,) box sides;
    excluded_table: (≥ N, X) int32 excluded partners per atom, padded with −1.
    Returns (idx (N, slots) int32 padded with N, most neighbors of any atom, most atoms in a cell).
    """
    n, dims = wrapped.shape
    suffix = "f32" if wrapped.dtype == jnp.float32 else "f64"
    outputs = (jax.ShapeDtypeStruct((n, slots), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32),
               jax.ShapeDtypeStruct((), jnp.int32))
    grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
    return jax.ffi.ffi_call(f"diffmd_cell_rows_{suffix}", outputs, vmap_method="sequential")(
        wrapped, cell_of.astype(jnp.int32), sides.astype(wrapped.dtype), excluded_table.astype(jnp.int32),
        grid0=np.int64(grid[0]), grid1=np.int64(grid[1]), grid2=np.int64(grid[2]), cutoff=np.float64(cutoff))


BOX_TOO_SMALL = 2**30  # max_cell_count marker: the box no longer holds the grid's cells


def cell_ids(wrapped, boundary, grid) -> Array:
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


def cell_build(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only=False):
    """Neighbor rows from the cell grid: (idx (N, slots), most neighbors of any atom, most atoms
    in any cell), or with count_only the most neighbors of any atom. The compiled build where it
    exists (the same rows; a cell may then hold more than `cell_capacity` atoms, still reported),
    else `_cell_build_jax`."""
    if not native_available(coords):
        return cell_build_jax(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only)
    n = coords.shape[0]
    table = jnp.asarray(_excluded_table(np.asarray(excluded).reshape(-1, 2), n))
    wrapped = boundary.wrap(coords)
    idx, count, most_in_cell = native_cell_rows(wrapped, cell_ids(wrapped, boundary, grid), boundary.sides, table,
                                                grid, cutoff, 1 if count_only else slots)
    if count_only:
        return count
    return idx, count, _flag_small_cells(most_in_cell, boundary, grid, cutoff)


def _flag_small_cells(most_in_cell, boundary, grid, cutoff):
    # Cells narrower than the cutoff (a box that shrank after the grid was fixed) would miss pairs.
    too_small = jnp.any(boundary.sides / np.asarray(grid) < cutoff)
    return jnp.where(too_small, BOX_TOO_SMALL, most_in_cell)


def cell_build_jax(coords, boundary, cutoff, excluded, slots, cell_capacity, grid, count_only=False):
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
    cell_of = cell_ids(wrapped, boundary, grid)
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


