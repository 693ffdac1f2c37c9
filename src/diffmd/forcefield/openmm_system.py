"""An `openmm.System` (with positions and a box) as a diffmd `System`.

Each supported OpenMM force becomes the diffmd term that computes the same energy, with its
numbers copied into differentiable arrays (nm, ps, amu, kJ/mol, e: OpenMM's units are
diffmd's default units). Anything diffmd cannot reproduce exactly is refused with an error
that names it: an unsupported force, virtual sites, a triclinic box, parameter offsets.

    HarmonicBondForce   → HarmonicBonds          HarmonicAngleForce → HarmonicAngles
    PeriodicTorsionForce→ PeriodicTorsions       RBTorsionForce     → RBTorsions
    CMAPTorsionForce    → CMAPTorsions           CMMotionRemover    → remove_com_motion
    NonbondedForce      → see `nonbonded.py` (Lennard-Jones, Coulomb / reaction field /
                          Ewald / PME, exceptions, dispersion correction)
"""

from __future__ import annotations

import numpy as np

from .._optional import require
from ..atoms import Atoms
from ..dynamics.constraints import FixedAtoms
from ..dynamics.distance_constraints import DistanceConstraints
from ..forces import CMAPTorsions, HarmonicAngles, HarmonicBonds, PeriodicTorsions, RBTorsions
from ..space import NoBoundary, RectangularBoundary
from ..system import System
from .custom_forces import custom_bonds, custom_nonbonded, custom_torsions
from .nonbonded import nonbonded_terms
from .quantities import as_jax, box_sides, in_nm, number


def from_openmm(openmm_system, positions, box_vectors=None, *, velocities=None, dtype=None,
                neighbor_skin: float = 0.1) -> System:
    """The diffmd `System` of an `openmm.System`.

    Args:
        openmm_system: the openmm.System (e.g. from `ForceField.createSystem`).
        positions: (N, 3) positions, an OpenMM Quantity or an array in nm.
        box_vectors: the periodic box (three vectors, a Quantity or nm); default the System's
            default box. Only rectangular boxes.
        velocities: (N, 3) nm/ps, Quantity or array (default zero).
        dtype: float dtype of coordinates and parameters (default: float64 when x64 is enabled).
        neighbor_skin: list cutoff minus interaction cutoff (nm), for cutoff methods.

    Returns:
        A System with OpenMM's atom order, whose terms each carry the class name of the OpenMM
        force they reproduce (`diffmd.energy_terms` groups energies by it).
    """
    openmm = require("openmm", "from_openmm")

    n = openmm_system.getNumParticles()
    coords = as_jax(in_nm(positions), dtype)
    if coords.shape != (n, 3):
        raise ValueError(f"from_openmm: positions have shape {coords.shape}, but the openmm.System has {n} particles")
    virtual = [i for i in range(n) if openmm_system.isVirtualSite(i)]
    if virtual:
        raise ValueError(f"from_openmm: particles {virtual[:5]}{'...' if len(virtual) > 5 else ''} are virtual "
                         "sites (e.g. a 4-site water model), which diffmd does not support yet")
    masses = np.array([openmm_system.getParticleMass(i).value_in_unit(openmm.unit.dalton) for i in range(n)])

    if openmm_system.usesPeriodicBoundaryConditions():
        vectors = box_vectors if box_vectors is not None else openmm_system.getDefaultPeriodicBoxVectors()
        boundary = RectangularBoundary(as_jax(box_sides(vectors), dtype))
    else:
        boundary = NoBoundary(n_dims=3)

    per_atom, pairwise, bonded, global_, finder, remove_com = {}, [], [], [], None, False
    forces = openmm_system.getForces()
    # NonbondedForce first: CHARMM's tabulated LJ checks its exclusions against the exceptions
    forces = sorted(forces, key=lambda f: type(f).__name__ != "NonbondedForce")
    exception_pairs = np.zeros((0, 2), np.int64)
    for force in forces:
        kind = type(force).__name__
        if kind == "CMMotionRemover":
            remove_com = True
        elif kind == "NonbondedForce":
            if "charge" in per_atom:
                raise ValueError("from_openmm: more than one NonbondedForce")
            terms = nonbonded_terms(force, boundary, coords.dtype, neighbor_skin)
            per_atom, finder = {**per_atom, **terms.per_atom}, terms.neighbor_finder
            exception_pairs = np.array([force.getExceptionParameters(k)[:2] for k in range(force.getNumExceptions())],
                                       dtype=np.int64).reshape(-1, 2)
            pairwise += terms.pairwise
            bonded += terms.bonded
            global_ += terms.global_
        elif kind == "CustomNonbondedForce":
            term, types = custom_nonbonded(force, exception_pairs, coords.dtype)
            pairwise.append(term)
            per_atom["lj_type"] = types
            if term.use_neighbors and finder is None:
                raise ValueError("from_openmm: a CustomNonbondedForce with a cutoff needs the NonbondedForce's "
                                 "neighbor list (none here)")
        elif kind in ("CustomTorsionForce", "CustomBondForce"):
            term = (custom_torsions if kind == "CustomTorsionForce" else custom_bonds)(force, coords.dtype)
            if term is not None:
                bonded.append(term)
        elif kind in _BONDED:
            term = _BONDED[kind](force, coords.dtype)
            if term is not None:
                bonded.append(term)
        else:
            raise ValueError(f"from_openmm: the openmm.System has a {kind}, which diffmd does not support "
                             f"(supported: {', '.join(sorted([*_BONDED, 'NonbondedForce', 'CMMotionRemover']))}, and "
                             "the CustomTorsion/Bond/NonbondedForce that openmm.app makes for CHARMM)")

    frozen = np.flatnonzero(masses == 0)
    constraints = constraints_of(openmm_system, frozen, dtype, np.asarray(coords))
    safe_masses = np.where(masses == 0, 1.0, masses)  # a fixed atom's mass is never used
    atoms = Atoms(as_jax(safe_masses, dtype), **{k: as_jax(v, dtype) for k, v in per_atom.items()})
    if finder is not None:  # slots per atom from these coordinates, so traced evaluations can build lists too
        excluded = np.concatenate([t.excluded_pairs() for t in bonded if t.excluded_pairs() is not None] or
                                  [np.zeros((0, 2), np.int64)])
        excluded = np.unique(np.sort(excluded, axis=1), axis=0).astype(np.int32)
        finder = finder.sized_for(coords, boundary, excluded)
    return System(atoms=atoms, coords=coords, boundary=boundary,
                  velocities=None if velocities is None else as_jax(in_nm(velocities, per_ps=True), dtype),
                  pairwise_inters=pairwise, bonded_inters=bonded, global_inters=global_, neighbor_finder=finder,
                  constraints=constraints, remove_com_motion=remove_com)


def constraints_of(openmm_system, frozen, dtype, positions=None):
    """The constraint slot of an openmm.System: its distance constraints, or its zero-mass
    (fixed) atoms, or None. `positions` (N, 3) nm and the System's masses fix the CCMA matrix of
    large clusters (AllBonds)."""
    import openmm

    if not openmm_system.getNumConstraints():
        return FixedAtoms(frozen) if len(frozen) else None
    rows = [openmm_system.getConstraintParameters(k) for k in range(openmm_system.getNumConstraints())]
    pairs = np.array([(i, j) for i, j, _ in rows], np.int64)
    if len(frozen):
        raise ValueError("from_openmm: the openmm.System has both zero-mass (fixed) atoms and constraints; "
                         "diffmd supports one or the other")
    distances = np.array([d.value_in_unit(openmm.unit.nanometer) for _, _, d in rows])
    masses = np.array([openmm_system.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                       for i in range(openmm_system.getNumParticles())])
    return DistanceConstraints(pairs, as_jax(distances, dtype), masses=masses,
                               geometry=None if positions is None else np.asarray(positions, np.float64))


# OpenMM force -> (diffmd term, count method, row getter, atoms per row, {field: its columns after the atoms})
TERM_ROWS = {
    "HarmonicBondForce": (HarmonicBonds, "getNumBonds", "getBondParameters", 2, {"r0": 0, "k": 1}),
    "HarmonicAngleForce": (HarmonicAngles, "getNumAngles", "getAngleParameters", 3, {"theta0": 0, "k": 1}),
    "PeriodicTorsionForce": (PeriodicTorsions, "getNumTorsions", "getTorsionParameters", 4,
                             {"periodicity": 0, "phase": 1, "k": 2}),
    "RBTorsionForce": (RBTorsions, "getNumTorsions", "getTorsionParameters", 4, {"coefficients": slice(0, 6)}),
}


def term_rows(force) -> tuple[np.ndarray, np.ndarray]:
    """(atoms (B, k), numbers (B, V)) of a force in TERM_ROWS, in OpenMM's order and units."""
    _, count, getter, atoms, _ = TERM_ROWS[type(force).__name__]
    rows = [getattr(force, getter)(i) for i in range(getattr(force, count)())]
    indices = np.array([r[:atoms] for r in rows], dtype=np.int64).reshape(len(rows), atoms)
    values = np.array([[number(v) for v in r[atoms:]] for r in rows], dtype=np.float64).reshape(len(rows), -1) \
        if rows else np.zeros((0, 0))
    return indices, values


def _listed_terms(force, dtype):
    kind, *_, fields = TERM_ROWS[type(force).__name__]
    indices, values = term_rows(force)
    if not len(indices):
        return None
    return kind(indices=indices, **{field: as_jax(values[:, columns], dtype) for field, columns in fields.items()})


def _cmap_torsions(force, dtype):
    if not force.getNumTorsions():
        return None
    maps = []
    for m in range(force.getNumMaps()):
        size, energy = force.getMapParameters(m)
        maps.append(CMAPTorsions.map_from_openmm(size, [number(e) for e in energy]))
    if len({grid.shape for grid in maps}) > 1:
        raise ValueError(f"from_openmm: CMAPTorsionForce maps of different sizes {sorted({g.shape[0] for g in maps})}")
    rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
    return CMAPTorsions(indices=[r[1:] for r in rows], maps=as_jax(np.stack(maps), dtype),
                        map_index=[r[0] for r in rows])


_BONDED = {**{kind: _listed_terms for kind in TERM_ROWS}, "CMAPTorsionForce": _cmap_torsions}

__all__ = ["from_openmm"]
