"""The static shapes of a neighbor list, as one object."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """Every static shape of a neighbor list; chosen once per run, grown on overflow.

    Attributes:
        slots: neighbor slots per atom (K, the rows' width).
        cell_slots: atom slots per cell of a cell list (0 without cells).
        grid: cells per side of a cell list, or None (all-pairs builds).
    """

    slots: int
    cell_slots: int = 0
    grid: tuple[int, ...] | None = None


def auto_capacity(count: int, margin: float, n_atoms: int) -> int:
    """Neighbor slots per atom for a start whose most crowded atom has `count` neighbors:
    margin × count plus a few, never more than N − 1."""
    return int(max(1, min(n_atoms - 1, math.ceil(count * margin) + 4)))


