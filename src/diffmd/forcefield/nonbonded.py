"""OpenMM's NonbondedForce as diffmd terms.

    method               pair terms (one pass over the list)           other terms
    NoCutoff             LennardJones + Coulomb, every pair            —
    CutoffNonPeriodic    LennardJones + CoulombReactionField, cutoff    —
    CutoffPeriodic       LennardJones + CoulombReactionField, cutoff    dispersion correction
    Ewald                LennardJones + EwaldDirect, cutoff             EwaldSum, dispersion corr.
    PME                  LennardJones + EwaldDirect, cutoff             PME, dispersion correction

Lennard-Jones uses OpenMM's Lorentz-Berthelot mixing, a plain cutoff or OpenMM's switching
function; the exceptions (1-2, 1-3 exclusions and the scaled 1-4 pairs) become one
`NonbondedExceptions` term that replaces those pairs' ordinary terms. Under Ewald and PME the
reciprocal term also subtracts the excluded pairs' share of the reciprocal sum, as OpenMM does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..forces import (Coulomb, CoulombReactionField, LennardJones, NonbondedExceptions, PlainCutoff,
                      SwitchedCutoff)
from ..neighbors import CellListNeighborFinder
from ..space import RectangularBoundary
from .quantities import as_jax, number

_METHODS = {0: "NoCutoff", 1: "CutoffNonPeriodic", 2: "CutoffPeriodic", 3: "Ewald", 4: "PME", 5: "LJPME"}


class NonbondedTerms(NamedTuple):
    per_atom: dict  # name -> (N,) numpy array: charge, sigma, epsilon
    pairwise: list
    bonded: list
    global_: list
    neighbor_finder: object


def nonbonded_terms(force, boundary, dtype, neighbor_skin: float = 0.1) -> NonbondedTerms:
    """The terms of an openmm.NonbondedForce (see the module docstring)."""
    method = _METHODS[force.getNonbondedMethod()]
    if method == "LJPME":
        raise ValueError("from_openmm: NonbondedForce method LJPME is not supported (use PME)")
    for count, what in ((force.getNumGlobalParameters(), "global parameters"),
                        (force.getNumParticleParameterOffsets(), "particle parameter offsets"),
                        (force.getNumExceptionParameterOffsets(), "exception parameter offsets")):
        if count:
            raise ValueError(f"from_openmm: NonbondedForce {what} are not supported")
    n = force.getNumParticles()
    table = np.array([[number(v) for v in force.getParticleParameters(i)] for i in range(n)]).reshape(n, 3)
    per_atom = {"charge": table[:, 0], "sigma": table[:, 1], "epsilon": table[:, 2]}
    exceptions = [force.getExceptionParameters(k) for k in range(force.getNumExceptions())]
    pairs = np.array([e[:2] for e in exceptions], dtype=np.int64).reshape(-1, 2)
    values = np.array([[number(v) for v in e[2:]] for e in exceptions]).reshape(-1, 3)
    bonded = []
    if len(pairs):
        bonded.append(NonbondedExceptions(indices=pairs, charge_prod=as_jax(values[:, 0], dtype),
                                          sigma=as_jax(values[:, 1], dtype), epsilon=as_jax(values[:, 2], dtype)))

    has_lj = bool(np.any(table[:, 2] != 0))
    has_charge = bool(np.any(table[:, 0] != 0))
    if method == "NoCutoff":
        pairwise = [term for term, used in ((LennardJones(), has_lj), (Coulomb(), has_charge)) if used]
        return NonbondedTerms(per_atom, pairwise, bonded, [], None)

    periodic = method != "CutoffNonPeriodic"
    if periodic != isinstance(boundary, RectangularBoundary):
        raise ValueError(f"from_openmm: NonbondedForce method {method} "
                         f"{'needs a periodic box' if periodic else 'is for systems without a box'}")
    rc = number(force.getCutoffDistance())
    if periodic:
        half = float(np.min(np.asarray(boundary.sides))) / 2
        if rc > half:
            raise ValueError(f"from_openmm: the cutoff {rc} nm exceeds half the smallest box side ({half} nm); "
                             "the box must be at least twice the cutoff")
        neighbor_skin = min(neighbor_skin, half - rc)
    lj_cutoff = (SwitchedCutoff(rc, number(force.getSwitchingDistance())) if force.getUseSwitchingFunction()
                 else PlainCutoff(rc))
    pairwise = [LennardJones(cutoff=lj_cutoff, use_neighbors=True)] if has_lj else []
    global_ = []
    if method in ("CutoffNonPeriodic", "CutoffPeriodic"):
        if has_charge:
            pairwise.append(CoulombReactionField(distance=rc, solvent_dielectric=force.getReactionFieldDielectric(),
                                                 use_neighbors=True))
    else:
        from ..forces import PME, EwaldDirect, EwaldSum

        alpha, grid = _ewald_settings(force, method, rc, np.asarray(boundary.sides))
        pairwise.append(EwaldDirect(alpha=alpha, distance=rc, use_neighbors=True))
        global_.append((PME if method == "PME" else EwaldSum)(alpha, grid, excluded=pairs))
    if periodic and force.getUseDispersionCorrection() and has_lj:
        from ..forces import DispersionCorrection

        switch = number(force.getSwitchingDistance()) if force.getUseSwitchingFunction() else None
        global_.append(DispersionCorrection.from_parameters(table[:, 1], table[:, 2], rc, switch))
    finder = CellListNeighborFinder(rc + neighbor_skin) if pairwise else None
    return NonbondedTerms(per_atom, pairwise, bonded, global_, finder)


def _ewald_settings(force, method, rc, sides):
    """(α, grid or k-vector counts): PME's own settings where the force gives them
    (`setPMEParameters`), else OpenMM's rules from the error tolerance."""
    from ..forces.ewald import ewald_parameters

    if method == "PME":
        alpha, nx, ny, nz = force.getPMEParameters()
        if number(alpha) != 0 and min(nx, ny, nz) > 0:
            return number(alpha), (int(nx), int(ny), int(nz))
    return ewald_parameters(method, rc, force.getEwaldErrorTolerance(), sides)


__all__ = ["NonbondedTerms", "nonbonded_terms"]
