"""Compaction of bool masks into neighbor rows (bit-packed words and popcounts, vectorised;
8× faster on CPU than a `nonzero` per row)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


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


