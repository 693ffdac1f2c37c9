"""Neighbor finders: which pairs of atoms a pairwise interaction has to look at.

A neighbor list is a fixed-capacity array of pairs (i < j) plus a mask, so shapes stay static
inside the compiled loop. The capacity is chosen from the starting configuration with a
margin; a list never drops a pair silently: every build counts the pairs it found, and a count
above capacity marks the list as overflowed. `simulate` then reallocates and reruns (eager
calls) or raises a clear error (traced calls).

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

from ._static import StaticArray, as_static

MAX_ALL_PAIRS_ATOMS = 4096


class NeighborList(eqx.Module):
    """Pairs within the list cutoff at the last build.

    Attributes:
        pairs: (capacity, 2) int32 atom indices, i < j; padded rows repeat pair 0.
        mask: (capacity,) bool, True for real pairs.
        reference_coords: (N, D) coordinates at the last build.
        max_count: int32, the largest number of pairs any build in this run needed.
    """

    pairs: Array
    mask: Array
    reference_coords: Array
    max_count: Array

    @property
    def capacity(self) -> int:
        return self.pairs.shape[0]

    @property
    def overflowed(self) -> Array:
        return self.max_count > self.capacity


class NoNeighborFinder(eqx.Module):
    """All pairs interact (minus exclusions): O(N²) per step, fine for small systems."""

    def __check_init__(self):
        pass

    cutoff = float("inf")
    every = None
    capacity = None


class DistanceNeighborFinder(eqx.Module):
    """All-pairs distance check, O(N²) per rebuild: pairs closer than `cutoff`.

    Attributes:
        cutoff: list cutoff (length units); must be at least the cutoff of every interaction
            that uses the list. The difference is the skin.
        every: rebuild every `every` steps (the reference's `n_steps`); None rebuilds only
            when an atom has moved more than half the skin.
        eligible: optional (N, N) bool matrix; pairs with False are never listed (the
            reference's `nb_matrix`). Stored as the list of ineligible pairs.
        capacity: number of pair slots; None chooses it from the starting coordinates.
        margin: capacity = margin × pairs at the start (+ a little), when chosen automatically.
    """

    cutoff: float = eqx.field(static=True)
    every: int | None = eqx.field(static=True, default=None)
    ineligible: StaticArray | None = eqx.field(static=True, default=None)
    capacity: int | None = eqx.field(static=True, default=None)
    margin: float = eqx.field(static=True, default=1.5)

    def __init__(self, cutoff: float, every: int | None = None, eligible=None, capacity: int | None = None,
                 margin: float = 1.5, *, ineligible=None):
        self.cutoff = float(cutoff)
        self.every = None if every is None else int(every)
        if eligible is not None:
            eligible = np.asarray(eligible, dtype=bool)
            if eligible.ndim != 2 or eligible.shape[0] != eligible.shape[1]:
                raise ValueError(f"DistanceNeighborFinder: eligible must be an (N, N) matrix, got {eligible.shape}")
            i, j = np.nonzero(~(eligible & eligible.T))
            keep = i < j
            ineligible = np.stack([i[keep], j[keep]], axis=1).astype(np.int32)
        if isinstance(ineligible, StaticArray):  # e.g. from with_capacity
            ineligible = ineligible.array
        self.ineligible = None if ineligible is None else as_static(np.asarray(ineligible).reshape(-1, 2))
        self.capacity = None if capacity is None else int(capacity)
        self.margin = float(margin)

    def __check_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"DistanceNeighborFinder: cutoff must be positive, got {self.cutoff}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"DistanceNeighborFinder: every must be >= 1, got {self.every}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"DistanceNeighborFinder: capacity must be >= 1, got {self.capacity}")
        if not self.margin >= 1:
            raise ValueError(f"DistanceNeighborFinder: margin must be >= 1, got {self.margin}")

    def with_capacity(self, capacity: int) -> "DistanceNeighborFinder":
        return DistanceNeighborFinder(self.cutoff, self.every, capacity=capacity, margin=self.margin,
                                      ineligible=self.ineligible)

    def count_pairs(self, coords, boundary, excluded: np.ndarray) -> Array:
        """Number of eligible pairs within the cutoff (int32 scalar)."""
        return jnp.sum(_pair_mask(coords, boundary, self.cutoff, excluded))

    def build(self, coords: Array, boundary, excluded: np.ndarray, capacity: int, max_count=None) -> NeighborList:
        """Build the list for `coords`; `excluded` is a static (E, 2) array of excluded pairs."""
        coords = jax.lax.stop_gradient(coords)
        n = coords.shape[0]
        mask = _pair_mask(coords, boundary, self.cutoff, excluded).ravel()
        count = jnp.sum(mask, dtype=jnp.int32)
        (flat,) = jnp.nonzero(mask, size=capacity, fill_value=0)
        pairs = jnp.stack([flat // n, flat % n], axis=1).astype(jnp.int32)
        valid = jnp.arange(capacity) < count
        previous = count if max_count is None else jnp.maximum(max_count, count)
        return NeighborList(pairs=pairs, mask=valid, reference_coords=coords, max_count=previous)


def _pair_mask(coords, boundary, cutoff, excluded: np.ndarray) -> Array:
    """(N, N) bool: i < j, within cutoff, not excluded."""
    n = coords.shape[0]
    d = boundary.vector(coords[:, None, :], coords[None, :, :])
    r2 = jnp.sum(d * d, axis=-1)
    upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    mask = upper & (r2 < cutoff * cutoff)
    if len(excluded):
        mask = mask.at[excluded[:, 0], excluded[:, 1]].set(False)
    return mask


def auto_capacity(count: int, margin: float, n_atoms: int) -> int:
    """Pair slots for `count` pairs found at the start: margin × count, at least 2N more than
    zero-pair starts would get, never more than all pairs."""
    total = n_atoms * (n_atoms - 1) // 2
    return int(max(1, min(total, math.ceil(count * margin) + 16)))


@functools.lru_cache(maxsize=32)
def all_pairs(n_atoms: int, excluded: StaticArray) -> StaticArray:
    """Every pair i < j except the excluded ones, as a static (P, 2) array."""
    if n_atoms > MAX_ALL_PAIRS_ATOMS:
        raise ValueError(
            f"{n_atoms} atoms is too many for all-pairs interactions (limit {MAX_ALL_PAIRS_ATOMS}); "
            "use a neighbor finder and interactions with use_neighbors=True"
        )
    i, j = np.triu_indices(n_atoms, k=1)
    if len(excluded):
        code = i.astype(np.int64) * n_atoms + j
        ex = excluded.array
        ex_code = np.minimum(ex[:, 0], ex[:, 1]).astype(np.int64) * n_atoms + np.maximum(ex[:, 0], ex[:, 1])
        keep = ~np.isin(code, ex_code)
        i, j = i[keep], j[keep]
    return StaticArray(np.stack([i, j], axis=1))
