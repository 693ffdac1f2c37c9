"""The Custom*Forces openmm.app makes for CHARMM, recognised by their exact energy expressions.

    CustomTorsionForce   k*min(dtheta, 2*pi-dtheta)^2 (charmm36_2024), or k*(theta-theta0)^2
                         with every θ0 = 0 (charmm36; the two agree there)   → HarmonicImpropers
    CustomBondForce      4*epsilon*((sigma/r)^12-(sigma/r)^6) (1-4 pairs)     → LennardJonesPairs
    CustomNonbondedForce acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6   → TabulatedLennardJones
                         (LJ types with NBFIX tables), without long-range correction

Any other expression, or a feature these terms do not reproduce exactly, is refused by name.
"""

from __future__ import annotations

import math

import numpy as np

from ..forces import HarmonicImpropers, LennardJonesPairs, PlainCutoff, SwitchedCutoff, TabulatedLennardJones
from .quantities import as_jax, number

_WRAPPED_IMPROPER = f"k*min(dtheta,2*pi-dtheta)^2;dtheta=abs(theta-theta0);pi={math.pi!r}"
_PLAIN_IMPROPER = "k*(theta-theta0)^2"
_LJ_PAIR = "4*epsilon*((sigma/r)^12-(sigma/r)^6)"
_LJ_TABLE = "acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6"


def _expression(force) -> str:
    return force.getEnergyFunction().replace(" ", "").rstrip(";")


def _refuse(force, why: str):
    return ValueError(f"from_openmm: the openmm.System has a {type(force).__name__} ({why}), which diffmd does not "
                      f"support; energy: {force.getEnergyFunction()!r}")


def custom_torsions(force, dtype):
    expression = _expression(force)
    names = [force.getPerTorsionParameterName(i) for i in range(force.getNumPerTorsionParameters())]
    if expression not in (_WRAPPED_IMPROPER, _PLAIN_IMPROPER) or sorted(names) != ["k", "theta0"] \
            or force.getNumGlobalParameters():
        raise _refuse(force, "not CHARMM's harmonic improper")
    rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
    if not rows:
        return None
    values = np.array([[dict(zip(names, r[4]))[n] for n in ("theta0", "k")] for r in rows], dtype=np.float64)
    if expression == _PLAIN_IMPROPER and np.any(values[:, 0] != 0):
        raise _refuse(force, "the unwrapped k*(theta-theta0)^2 with θ0 ≠ 0 differs from the periodic form")
    return HarmonicImpropers(indices=[r[:4] for r in rows], theta0=as_jax(values[:, 0], dtype),
                             k=as_jax(values[:, 1], dtype))


def custom_bonds(force, dtype):
    names = [force.getPerBondParameterName(i) for i in range(force.getNumPerBondParameters())]
    if _expression(force) != _LJ_PAIR or sorted(names) != ["epsilon", "sigma"] or force.getNumGlobalParameters():
        raise _refuse(force, "not CHARMM's Lennard-Jones 1-4 pairs")
    rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
    if not rows:
        return None
    values = np.array([[dict(zip(names, r[2]))[n] for n in ("sigma", "epsilon")] for r in rows], dtype=np.float64)
    return LennardJonesPairs(indices=[r[:2] for r in rows], sigma=as_jax(values[:, 0], dtype),
                             epsilon=as_jax(values[:, 1], dtype))


def custom_nonbonded(force, nonbonded_pairs: np.ndarray, dtype):
    """(TabulatedLennardJones, per-atom lj_type) of CHARMM's LJ force; its exclusions must be
    among the NonbondedForce's exception pairs (they are then excluded from both)."""
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    tables = {force.getTabulatedFunctionName(k): force.getTabulatedFunction(k)
              for k in range(force.getNumTabulatedFunctions())}
    if (_expression(force) != _LJ_TABLE or names != ["type"] or sorted(tables) != ["acoef", "bcoef"]
            or force.getNumGlobalParameters() or force.getNumInteractionGroups() or force.getNumComputedValues()):
        raise _refuse(force, "not CHARMM's tabulated Lennard-Jones")
    method = force.getNonbondedMethod()
    if method not in (0, 1, 2):
        raise _refuse(force, f"nonbonded method {method}")
    if method == 2 and force.getUseLongRangeCorrection():  # (OpenMM applies it only in a periodic box)
        raise _refuse(force, "its long-range correction is not implemented")
    grids = {}
    for name, function in tables.items():
        nx, ny, values = function.getFunctionParameters()
        grids[name] = np.asarray(values, dtype=np.float64).reshape(ny, nx).T  # values[x + nx·y]
    exclusions = np.array([force.getExclusionParticles(k) for k in range(force.getNumExclusions())],
                          dtype=np.int64).reshape(-1, 2)
    known = {tuple(p) for p in np.sort(nonbonded_pairs, axis=1).tolist()}
    if any(tuple(p) not in known for p in np.sort(exclusions, axis=1).tolist()):
        raise _refuse(force, "exclusions that are not NonbondedForce exceptions")
    types = np.array([force.getParticleParameters(i)[0] for i in range(force.getNumParticles())], dtype=np.float64)
    cutoff_kwargs = {}
    if method != 0:
        rc = number(force.getCutoffDistance())
        cutoff_kwargs = dict(use_neighbors=True, cutoff=SwitchedCutoff(rc, number(force.getSwitchingDistance()))
                             if force.getUseSwitchingFunction() else PlainCutoff(rc))
    term = TabulatedLennardJones(acoef=as_jax(grids["acoef"], dtype), bcoef=as_jax(grids["bcoef"], dtype),
                                 **cutoff_kwargs)
    return term, types


__all__ = ["custom_bonds", "custom_nonbonded", "custom_torsions"]
