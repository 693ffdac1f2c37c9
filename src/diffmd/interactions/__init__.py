"""Interactions: pairwise (general) and specific (bonded), plus cutoff schemes."""

from .base import PairwiseInteraction, SpecificInteraction, merge_terms
from .bonded import (
    CosineAngle,
    CosineAngles,
    HarmonicAngle,
    HarmonicAngles,
    HarmonicBond,
    HarmonicBonds,
    MorseBond,
    MorseBonds,
    PeriodicTorsion,
    PeriodicTorsions,
    RBTorsion,
    RBTorsions,
)
from .cutoffs import NoCutoff, PlainCutoff, ShiftedForceCutoff, ShiftedPotentialCutoff, SwitchedCutoff
from .geometry import bond_angle, dihedral_angle, safe_norm
from .pairwise import Coulomb, CoulombReactionField, LennardJones, Mie, SoftSphere

__all__ = [name for name in dir() if not name.startswith("_")]
