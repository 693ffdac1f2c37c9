"""Neighbor lists: finders (`finders`), their static shapes (`capacity`), all-pairs and
cell-list builds (`all_pairs`, `cells`) and mask compaction (`compaction`)."""

from .all_pairs import MAX_ALL_PAIRS_ATOMS, all_neighbors, all_neighbors_array
from .capacity import Capacity, auto_capacity
from .compaction import compact_rows, compact_words, pack_rows
from .finders import CellListNeighborFinder, DistanceNeighborFinder, NeighborList, NoNeighborFinder, _ListFinder

__all__ = ["MAX_ALL_PAIRS_ATOMS", "all_neighbors", "all_neighbors_array", "Capacity", "auto_capacity",
           "compact_rows", "compact_words", "pack_rows", "CellListNeighborFinder", "DistanceNeighborFinder",
           "NeighborList", "NoNeighborFinder"]
