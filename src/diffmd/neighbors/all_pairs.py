"""All-pairs neighbor rows: a distance check of every pair (O(N²)), and the static rows of
interactions that see every pair."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray
from .compaction import compact_rows

MAX_ALL_PAIRS_ATOMS = 4096
"""The most atoms an all-pairs build handles (its N × N distance matrix); use cell lists above."""


def all_pairs_rows(coords, boundary, cutoff, excluded: np.ndarray, slots: int):
    """(neighbor rows (N, slots), most neighbors of any atom) from the all-pairs mask."""
    mask = neighbor_mask(coords, boundary, cutoff, excluded)
    return compact_rows(mask, slots), jnp.max(jnp.sum(mask, axis=1, dtype=jnp.int32))


def neighbor_mask(coords, boundary, cutoff, excluded: np.ndarray) -> Array:
    """(N, N) bool: i ≠ j, within cutoff, not excluded (symmetric)."""
    n = coords.shape[0]
    x = coords.T  # component by component (D, N): vectorises far better than (N, N, 3)
    d = boundary.vector_components(x[:, :, None], x[:, None, :])
    r2 = jnp.sum(d * d, axis=0)
    mask = (r2 < cutoff * cutoff) & ~jnp.eye(n, dtype=bool)
    if len(excluded):
        mask = mask.at[excluded[:, 0], excluded[:, 1]].set(False).at[excluded[:, 1], excluded[:, 0]].set(False)
    return mask


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
