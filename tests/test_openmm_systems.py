"""`from_openmm` and `energy_terms` against OpenMM's Reference platform (float64).

Systems are built with openmm.app from files the openmm wheel ships: the villin headpiece
(`app/data/test.pdb`) with its water removed (a protein in vacuum) and with its water."""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
import pytest

import diffmd as md

openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")
unit = openmm.unit

jax.config.update("jax_enable_x64", True)
VILLIN = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
KJ = unit.kilojoule_per_mole


@functools.lru_cache(maxsize=None)
def villin_in_vacuum():
    pdb = app.PDBFile(VILLIN)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("HOH", "Cl", "CL", "Na", "NA")])
    return modeller.topology, modeller.positions


def reference_energies(system, positions, box=None):
    """{force class name: energy} and total forces from OpenMM's Reference platform."""
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    energies = {}
    for index, force in enumerate(system.getForces()):
        state = context.getState(getEnergy=True, groups={index})
        name = type(force).__name__
        energies[name] = energies.get(name, 0.0) + state.getPotentialEnergy().value_in_unit(KJ)
    state = context.getState(getEnergy=True, getForces=True)
    forces = state.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)
    return energies, state.getPotentialEnergy().value_in_unit(KJ), forces


def compare(system, positions, *, energy_rtol=1e-6, force_atol=1e-4, box=None):
    expected, total, expected_forces = reference_energies(system, positions, box)
    ours = md.from_openmm(system, positions, box)
    terms = {k: float(v) for k, v in md.energy_terms(ours).items()}
    expected.pop("CMMotionRemover", None)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=energy_rtol, abs=1e-6), name
    energy, forces = jax.jit(md.energy_and_forces)(ours)
    assert float(energy) == pytest.approx(total, rel=energy_rtol)
    assert np.abs(np.asarray(forces) - expected_forces).max() < force_atol
    return ours


def test_villin_in_vacuum_every_term_matches_openmm_reference():
    topology, positions = villin_in_vacuum()
    forcefield = app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    ours = compare(system, positions)
    assert ours.remove_com_motion  # createSystem adds a CMMotionRemover


@pytest.mark.slow  # ~6 s; the reaction field with switching is also checked on a water box (test_forcefield)
@pytest.mark.parametrize("method", ["CutoffNonPeriodic"])
def test_villin_in_vacuum_reaction_field(method):
    topology, positions = villin_in_vacuum()
    forcefield = app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=getattr(app, method), nonbondedCutoff=1.0,
                                     constraints=None, rigidWater=False, switchDistance=0.8)
    compare(system, positions)


def test_unsupported_forces_and_constraints_are_named():
    topology, positions = villin_in_vacuum()
    forcefield = app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(topology, constraints=app.HBonds)
    assert len(md.from_openmm(system, positions).constraints.pairs) == system.getNumConstraints()
    system = forcefield.createSystem(topology, constraints=app.AllBonds)  # one cluster per chain: CCMA
    assert len(md.from_openmm(system, positions).constraints.large_clusters) == 1
    system = forcefield.createSystem(topology, constraints=None)
    system.addForce(openmm.CustomExternalForce("x^2"))
    with pytest.raises(ValueError, match="CustomExternalForce"):
        md.from_openmm(system, positions)


@pytest.mark.slow  # ~45 s: the tabulated LJ runs on the pure-JAX pair kernel (a table lookup per pair)
@pytest.mark.parametrize("files", [("charmm36_2024.xml",), ("charmm36.xml",)])
def test_charmm_protein_in_vacuum_matches_openmm(files):
    """CHARMM36: Urey-Bradley terms, CMAP, harmonic impropers (CustomTorsionForce), LJ from
    NBFIX tables (CustomNonbondedForce) and its 1-4 pairs (CustomBondForce), term by term."""
    topology, positions = villin_in_vacuum()
    system = app.ForceField(*files).createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                                 rigidWater=False)
    kinds = {type(f).__name__ for f in system.getForces()}
    assert {"CustomNonbondedForce", "CustomBondForce", "CustomTorsionForce", "CMAPTorsionForce"} <= kinds
    compare(system, positions)
