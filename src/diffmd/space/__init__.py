"""Geometry apart from physics: boundaries answer "what is the shortest vector from a to b?",
and NaN-safe primitives turn vectors into distances, angles and dihedrals. Interactions never
see the box except through these."""

from .boundaries import Boundary, CubicBoundary, NoBoundary, RectangularBoundary, vector
from .geometry import bond_angle, dihedral_angle, safe_norm, term_angles, term_dihedrals, term_distances

__all__ = ["Boundary", "CubicBoundary", "NoBoundary", "RectangularBoundary", "vector", "bond_angle",
           "dihedral_angle", "safe_norm", "term_angles", "term_dihedrals", "term_distances"]
