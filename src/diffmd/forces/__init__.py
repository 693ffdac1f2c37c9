"""Terms of the potential energy, one file each: pairwise (`PairwiseInteraction`), bonded
(`BondedInteraction`) and global (`GlobalInteraction`), the cutoff schemes and mixing rules."""

from .base import (BondedForce, BondedInteraction, GlobalInteraction, PairwiseForce, PairwiseInteraction, Params,
                   merge_terms)
from .cmap import CMAPTorsions
from .cosine_angle import CosineAngle, CosineAngles
from .coulomb import Coulomb
from .cutoffs import Cutoff, NoCutoff, PlainCutoff, ShiftedForceCutoff, ShiftedPotentialCutoff, SwitchedCutoff
from .dispersion_correction import DispersionCorrection, lj_classes
from .ewald import EwaldDirect, ewald_parameters
from .ewald_sum import EwaldSum
from .exceptions import NonbondedExceptions
from .harmonic_angle import HarmonicAngle, HarmonicAngles
from .harmonic_bond import HarmonicBond, HarmonicBonds
from .harmonic_improper import HarmonicImproper, HarmonicImpropers
from .lennard_jones import LennardJones
from .lennard_jones_pairs import LennardJonesPairs
from .mie import Mie
from .morse_bond import MorseBond, MorseBonds
from .periodic_torsion import PeriodicTorsion, PeriodicTorsions
from .pme import PME
from .rb_torsion import RBTorsion, RBTorsions
from .reaction_field import CoulombReactionField
from .soft_sphere import SoftSphere
from .tabulated_lennard_jones import TabulatedLennardJones

__all__ = [
    "BondedForce", "BondedInteraction", "GlobalInteraction", "PairwiseForce", "PairwiseInteraction", "Params",
    "merge_terms", "CMAPTorsions", "CosineAngle", "CosineAngles", "Coulomb", "Cutoff", "NoCutoff", "PlainCutoff",
    "ShiftedForceCutoff", "ShiftedPotentialCutoff", "SwitchedCutoff", "NonbondedExceptions", "HarmonicAngle",
    "HarmonicAngles", "HarmonicBond", "HarmonicBonds", "HarmonicImproper", "HarmonicImpropers", "LennardJones",
    "LennardJonesPairs", "TabulatedLennardJones",
    "Mie", "MorseBond", "MorseBonds",
    "PeriodicTorsion", "PeriodicTorsions", "RBTorsion", "RBTorsions", "CoulombReactionField", "SoftSphere",
    "EwaldDirect", "EwaldSum", "PME", "ewald_parameters", "DispersionCorrection", "lj_classes",
]
