"""`diffmd.interop.ase`: ASE atoms in and out, and the ASE calculator (float64).

Unit conversions are checked against ASE's own constants (`ase.units`); the calculator's
energy and forces against diffmd's, its forces against finite differences of its energy, an
ASE velocity-Verlet run against diffmd's own, and a water dimer against OpenMM's Reference
platform."""

from __future__ import annotations

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md

ase = pytest.importorskip("ase")
import ase.units  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from diffmd.interop.ase import (ANGSTROM_PER_NM, ASE_VELOCITY_PER_NM_PER_PS, KJ_PER_MOL_PER_EV,  # noqa: E402
                                DiffmdCalculator, from_ase, to_ase)

jax.config.update("jax_enable_x64", True)
EV = ase.units.kJ / ase.units.mol  # 1 kJ/mol in eV, ASE's CODATA (2014: 8e-9 from ours, 2018)
SIGMA, EPSILON = 0.34, 0.996  # argon, nm and kJ/mol


def argon_atoms(n_side=4, density=18.0, temperature=120.0, seed=0) -> ase.Atoms:
    """n_side³ argon atoms on a jittered lattice (atoms/nm³) in a periodic cube, ASE units."""
    side = (n_side**3 / density) ** (1 / 3) * ANGSTROM_PER_NM
    grid = (np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * side / n_side
    rng = np.random.default_rng(seed)
    atoms = ase.Atoms(f"Ar{n_side**3}", positions=grid + rng.normal(0.0, 0.1, grid.shape), cell=[side] * 3, pbc=True)
    atoms.set_velocities(rng.normal(0.0, np.sqrt(ase.units.kB * temperature / atoms.get_masses()[:, None]), grid.shape))
    return atoms


def lennard_jones(structure) -> md.System:
    n = len(structure.masses)
    return structure.system(atoms=md.Atoms(structure.masses, sigma=jnp.full(n, SIGMA), epsilon=jnp.full(n, EPSILON)),
                            pairwise_inters=[md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(0.6))],
                            neighbor_finder=md.DistanceNeighborFinder(cutoff=0.7))


def test_constants_agree_with_ase_units():
    assert KJ_PER_MOL_PER_EV * EV == pytest.approx(1.0, rel=1e-7)
    assert ANGSTROM_PER_NM == ase.units.nm
    assert ASE_VELOCITY_PER_NM_PER_PS == pytest.approx(ase.units.nm / (1e3 * ase.units.fs), rel=1e-15)


def test_round_trip_keeps_positions_cell_masses_velocities_and_symbols():
    rng = np.random.default_rng(1)
    atoms = ase.Atoms("ArNeKrH2OC", positions=rng.uniform(0, 9, (7, 3)), cell=[9.0, 11.0, 13.0], pbc=True)
    atoms.set_masses(atoms.get_masses() * 1.01)  # not the table's: the masses are carried, not looked up
    atoms.set_velocities(rng.normal(0, 0.01, (7, 3)))
    structure = from_ase(atoms)
    assert isinstance(structure.boundary, md.RectangularBoundary)
    np.testing.assert_allclose(structure.boundary.sides, [0.9, 1.1, 1.3], rtol=1e-15)
    np.testing.assert_allclose(structure.coords, atoms.positions / 10, rtol=1e-15)
    system = structure.system()
    # the kinetic energy in both unit systems checks the velocity conversion (eV = kJ/mol · EV)
    kinetic = float(md.kinetic_energy(system.atoms.mass, system.velocities))  # kJ/mol
    assert atoms.get_kinetic_energy() == pytest.approx(kinetic * EV, rel=1e-7)
    back = to_ase(system, symbols=structure.symbols)
    np.testing.assert_allclose(back.positions, atoms.positions, rtol=1e-14)
    np.testing.assert_allclose(back.cell, atoms.cell, rtol=1e-14)
    assert back.pbc.all()
    np.testing.assert_allclose(back.get_masses(), atoms.get_masses(), rtol=1e-14)
    np.testing.assert_allclose(back.get_velocities(), atoms.get_velocities(), rtol=1e-12, atol=1e-16)
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()


def test_open_boundary_and_symbols_guessed_from_masses():
    water = ase.Atoms("OH2", positions=[[0, 0, 0], [0.9572, 0, 0], [-0.24, 0.927, 0]])
    structure = from_ase(water)
    assert isinstance(structure.boundary, md.NoBoundary)
    np.testing.assert_array_equal(structure.velocities, 0.0)
    back = to_ase(structure.system())
    assert back.get_chemical_symbols() == ["O", "H", "H"]
    assert not back.pbc.any() and back.cell.volume == 0


def test_calculator_matches_diffmd_in_kj_per_mol():
    atoms = argon_atoms()
    system = lennard_jones(from_ase(atoms))
    atoms.calc = DiffmdCalculator(system)
    energy, forces = md.energy_and_forces(system)
    assert atoms.get_potential_energy() / EV == pytest.approx(float(energy), rel=1e-7)
    assert atoms.get_potential_energy() * KJ_PER_MOL_PER_EV == pytest.approx(float(energy), rel=1e-13)
    np.testing.assert_allclose(atoms.get_forces() * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM, forces, rtol=1e-12, atol=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()

    # crowd 40 atoms around atom 0: more neighbors than the list has room for, so it is resized
    slots = atoms.calc._capacity.slots
    directions = np.random.default_rng(2).normal(size=(40, 3))
    atoms.positions[1:41] = atoms.positions[0] + 5.5 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    fresh = atoms.copy()
    fresh.calc = DiffmdCalculator(system)  # a list sized at these positions (and the compiled function reused)
    assert atoms.get_potential_energy() == fresh.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), fresh.get_forces())
    assert atoms.calc._capacity.slots > slots


def test_forces_are_minus_the_gradient_of_the_energy_in_ev_per_angstrom():
    atoms = argon_atoms()
    atoms.calc = DiffmdCalculator(lennard_jones(from_ase(atoms)))  # (compiled by the test above)
    forces = atoms.get_forces()
    h = 1e-4  # Å
    for atom, axis in [(0, 0), (5, 1), (13, 2), (63, 0)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), rel=1e-6, abs=1e-10)


def test_calculator_follows_a_changed_cell_and_refuses_one_too_small():
    atoms = argon_atoms()
    system = lennard_jones(from_ase(atoms))
    atoms.calc = DiffmdCalculator(system)
    atoms.get_potential_energy()
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    expected = md.potential_energy(lennard_jones(from_ase(atoms)))
    assert atoms.get_potential_energy() * KJ_PER_MOL_PER_EV == pytest.approx(float(expected), rel=1e-12)
    atoms.set_cell(atoms.cell * 0.8, scale_atoms=True)  # 12.6 Å < twice the 0.7 nm list cutoff
    with pytest.raises(ValueError, match="smaller than twice the System's largest cutoff"):
        atoms.get_potential_energy()


def test_ase_velocity_verlet_conserves_energy_and_follows_diffmd():
    atoms = argon_atoms()
    system = lennard_jones(from_ase(atoms))
    atoms.calc = DiffmdCalculator(system)
    start = atoms.get_total_energy()
    totals = []
    dynamics = VelocityVerlet(atoms, timestep=5 * ase.units.fs)
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dynamics.run(200)
    assert np.max(np.abs(np.array(totals) - start)) < 1e-3 * atoms.get_kinetic_energy()  # velocity Verlet's wobble
    run = md.simulate(system, md.VelocityVerlet(0.005), 200)  # the same 1 ps in diffmd (ps)
    ours = to_ase(system, run.state)
    np.testing.assert_allclose(ours.positions, atoms.positions, rtol=0, atol=1e-6)  # Å (measured 2e-8)
    np.testing.assert_allclose(ours.get_velocities(), atoms.get_velocities(), rtol=0, atol=1e-7)  # speeds ~ 0.03


def water_dimer():
    """Two TIP3P waters (openmm.app Topology, positions in nm)."""
    app = pytest.importorskip("openmm.app")
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(2):
        residue = topology.addResidue("HOH", chain)
        o, *hs = (topology.addAtom(name, element, residue) for name, element in
                  (("O", app.element.oxygen), ("H1", app.element.hydrogen), ("H2", app.element.hydrogen)))
        for h in hs:
            topology.addBond(o, h)
    positions = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0],
                          [0.29, 0.02, 0.01], [0.32, 0.11, 0.03], [0.31, -0.03, 0.09]])
    return topology, positions


def test_water_dimer_energy_and_forces_agree_with_openmm():
    openmm = pytest.importorskip("openmm")
    app, unit = pytest.importorskip("openmm.app"), openmm.unit
    topology, positions = water_dimer()
    omm_system = app.ForceField("amber14/tip3p.xml").createSystem(topology, rigidWater=False)
    context = openmm.Context(omm_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)

    system = md.ForceField("amber14/tip3p.xml").create_system((topology, positions), rigid_water=False)
    atoms = to_ase(system, symbols=[a.element.symbol for a in topology.atoms()])
    assert atoms.get_chemical_symbols() == to_ase(system).get_chemical_symbols() == ["O", "H", "H"] * 2
    atoms.calc = DiffmdCalculator(system)
    assert atoms.get_potential_energy() / EV == pytest.approx(energy, rel=1e-6)
    np.testing.assert_allclose(atoms.get_forces() / EV * ANGSTROM_PER_NM, forces, rtol=1e-6, atol=1e-4)


def test_errors_name_the_problem():
    atoms = argon_atoms(n_side=2)
    triclinic = atoms.copy()
    triclinic.set_cell([10.0, 10.0, 10.0, 90.0, 90.0, 60.0])
    with pytest.raises(ValueError, match="no triclinic boxes"):
        from_ase(triclinic)
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic along all three axes or none"):
        from_ase(slab)

    reduced = md.System(atoms=md.Atoms.uniform(2, mass=1.0), coords=jnp.array([[0.0, 0, 0], [1.0, 0, 0]]),
                        boundary=md.NoBoundary(), units=md.REDUCED_UNITS)
    for make in (DiffmdCalculator, to_ase):
        with pytest.raises(ValueError, match="reduced units .* no conversion to ASE's Å and eV"):
            make(reduced)
    flat = md.System(atoms=md.Atoms.uniform(2, mass=1.0), coords=jnp.zeros((2, 2)), boundary=md.NoBoundary(n_dims=2))
    with pytest.raises(ValueError, match="ASE atoms are 3-D"):
        to_ase(flat)

    open_system = from_ase(ase.Atoms("Ar2", positions=[[0, 0, 0], [4, 0, 0]])).system()
    atoms.calc = DiffmdCalculator(open_system)
    with pytest.raises(ValueError, match="the atoms are 8, the System has 2"):
        atoms.get_potential_energy()
    pair = ase.Atoms("Ar2", positions=[[0, 0, 0], [4, 0, 0]], cell=[20.0] * 3, pbc=True)
    pair.calc = DiffmdCalculator(open_system)
    with pytest.raises(ValueError, match="the atoms are periodic but the System has no box"):
        pair.get_potential_energy()


def test_missing_ase_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ase", None)  # `import ase` now fails
    monkeypatch.delitem(sys.modules, "diffmd.interop.ase")
    with pytest.raises(ImportError, match=r"pip install \"diffmd\[ase\]\""):
        importlib.import_module("diffmd.interop.ase")
    import diffmd.interop

    monkeypatch.delattr(diffmd.interop, "ase", raising=False)  # the submodule an earlier import left
    with pytest.raises(ImportError, match=r"pip install \"diffmd\[ase\]\""):
        diffmd.interop.from_ase  # noqa: B018
