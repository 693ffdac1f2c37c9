"""Hashable, read-only integer tables that live in the static part of a pytree.

Index arrays (which atoms a bond joins, which pairs are excluded) are topology, not
parameters: they must never receive a gradient, and `jax.grad` refuses integer leaves.
Keeping them static also lets XLA see them as constants. Hashing is done once, at
construction, so jit dispatch stays cheap even for 10^5 bonds.
"""

from __future__ import annotations

import numpy as np


class StaticArray:
    """An immutable numpy array with value-based hashing and equality."""

    __slots__ = ("array", "_hash")

    def __init__(self, values, dtype=np.int32):
        array = np.array(values, dtype=dtype, copy=True)
        array.setflags(write=False)
        self.array = array
        self._hash = hash((array.shape, array.dtype.str, array.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if self is other:
            return True
        if not isinstance(other, StaticArray) or self._hash != other._hash:
            return False
        return self.array.shape == other.array.shape and np.array_equal(self.array, other.array)

    @property
    def shape(self):
        return self.array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        return f"StaticArray(shape={self.array.shape}, dtype={self.array.dtype})"


def as_static(values, dtype=np.int32) -> StaticArray:
    """Return `values` as a StaticArray (no copy if it already is one)."""
    if isinstance(values, StaticArray):
        return values
    return StaticArray(values, dtype=dtype)
