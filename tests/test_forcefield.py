"""`diffmd.ForceField`: OpenMM XML files as a differentiable parameter pytree.

Float64 against OpenMM's Reference platform; gradients with respect to the force field's own
numbers against central finite differences; `write_xml` round trip through OpenMM."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_openmm_systems import KJ, VILLIN, app, openmm, unit, villin_in_vacuum  # (skips without openmm)


@functools.lru_cache(maxsize=None)
def amber14():
    return md.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def reference(topology, positions, forcefield_files, **args):
    ff = app.ForceField(*forcefield_files)
    system = ff.createSystem(topology, **args)
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    energies = {}
    for index, force in enumerate(system.getForces()):
        value = context.getState(getEnergy=True, groups={index}).getPotentialEnergy().value_in_unit(KJ)
        energies[type(force).__name__] = energies.get(type(force).__name__, 0.0) + value
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)
    energies.pop("CMMotionRemover", None)
    return energies, forces


@pytest.fixture(scope="module")
def vacuum_system():
    return amber14().create_system(villin_in_vacuum())


def test_parameter_tree_mirrors_the_xml():
    ff = amber14()
    p = ff.parameters
    assert set(p) >= {"AtomTypes", "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
                      "NonbondedForce", "Residues"}
    assert p["HarmonicBondForce"]["k"].shape == p["HarmonicBondForce"]["length"].shape == \
        (len(ff.labels["HarmonicBondForce"]),)
    assert len(ff.labels["Residues"]) == p["Residues"]["charge"].shape[0]
    assert float(p["NonbondedForce"]["coulomb14scale"]) == pytest.approx(1 / 1.2)
    assert "ALA:CA" in ff.labels["Residues"]


def test_villin_in_vacuum_matches_openmm_term_by_term(vacuum_system):
    expected, expected_forces = reference(*villin_in_vacuum(), ("amber14-all.xml", "amber14/tip3p.xml"),
                                          nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    terms = {k: float(v) for k, v in md.energy_terms(vacuum_system).items()}
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6), name
    forces = np.asarray(jax.jit(md.forces)(vacuum_system))
    assert np.abs(forces - expected_forces).max() < 1e-4


def test_gradients_with_respect_to_force_field_numbers(vacuum_system):
    """dE/dθ for a σ and ε of one atom type, one template atom's charge, a torsion k and a bond
    k, against central finite differences of the energy."""
    ff, system = amber14(), vacuum_system
    energy = jax.jit(lambda p: md.potential_energy(system.with_parameters(p)))
    params = system.force_field.parameters
    grads = jax.jit(jax.grad(lambda p: md.potential_energy(system.with_parameters(p))))(params)
    labels = ff.labels
    picks = [("NonbondedForce", "sigma", int(np.argmax(np.abs(np.asarray(grads["NonbondedForce"]["sigma"]))))),
             ("NonbondedForce", "epsilon", int(np.argmax(np.abs(np.asarray(grads["NonbondedForce"]["epsilon"]))))),
             ("Residues", "charge", labels["Residues"].index("ALA:CA")),
             ("PeriodicTorsionForce", "k", int(np.argmax(np.abs(np.asarray(grads["PeriodicTorsionForce"]["k"]))))),
             ("HarmonicBondForce", "k", int(np.argmax(np.abs(np.asarray(grads["HarmonicBondForce"]["k"])))))]
    for section, field, entry in picks:
        value = float(params[section][field][entry])
        h = 1e-4 * max(abs(value), 1e-2)

        def at(x, section=section, field=field, entry=entry):
            p = jax.tree_util.tree_map(lambda a: a, params)
            p[section] = dict(p[section])
            p[section][field] = p[section][field].at[entry].set(x)
            return float(energy(p))

        fd = (8 * (at(value + h) - at(value - h)) - (at(value + 2 * h) - at(value - 2 * h))) / (12 * h)
        g = float(grads[section][field][entry])
        assert g != 0.0, (section, field)
        assert g == pytest.approx(fd, rel=1e-7), (section, field, labels[section][entry])


def test_write_xml_round_trip(tmp_path, vacuum_system):
    ff = amber14()
    params = jax.tree_util.tree_map(lambda a: a, ff.parameters)
    params["HarmonicBondForce"] = dict(params["HarmonicBondForce"], k=params["HarmonicBondForce"]["k"] * 1.1)
    params["Residues"] = dict(params["Residues"], charge=params["Residues"]["charge"] * 0.9)
    params["NonbondedForce"] = dict(params["NonbondedForce"], sigma=params["NonbondedForce"]["sigma"] * 1.02)
    path = tmp_path / "trained.xml"
    ff.write_xml(params, path)
    expected, _ = reference(*villin_in_vacuum(), (str(path),), nonbondedMethod=app.NoCutoff, constraints=None,
                            rigidWater=False)
    ours = {k: float(v) for k, v in md.energy_terms(vacuum_system.with_parameters(params)).items()}
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, rel=1e-6), name
    again = md.ForceField(str(path))
    np.testing.assert_allclose(again.parameters["HarmonicBondForce"]["k"], params["HarmonicBondForce"]["k"], rtol=1e-15)


def test_clear_errors():
    ff = amber14()
    pdb = app.PDBFile(VILLIN)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    hydrogens = [a for a in modeller.topology.atoms() if a.element is not None and a.element.symbol == "H"]
    modeller.delete(hydrogens[:3])
    with pytest.raises(ValueError, match=r"no template .* residue 0 .*addHydrogens"):
        ff.create_system(modeller)
    topology, positions = villin_in_vacuum()
    boxless = app.Modeller(topology, positions)
    boxless.topology.setPeriodicBoxVectors(None)
    with pytest.raises(ValueError, match="needs a periodic box"):
        ff.create_system(boxless, nonbonded_method="PME")
    with pytest.raises(ValueError, match="nonbonded_method must be one of"):
        ff.create_system((topology, positions), nonbonded_method="pme")
    small = water_box()  # a 2 nm box
    with pytest.raises(ValueError, match="twice the cutoff"):
        ff.create_system(small, nonbonded_method="PME", nonbonded_cutoff=1.2, rigid_water=False)
    with pytest.raises(ValueError, match="No parameters defined for atom type"):  # a missing parameter
        broken = md.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        generator = next(g for g in broken.openmm._forces if type(g).__name__ == "NonbondedGenerator")
        generator.params.paramsForType.pop("protein-CX")
        broken.create_system((topology, positions))


def test_nve_run_in_vacuum_follows_openmm():
    """100 velocity-Verlet steps of villin in vacuum (float64, 1 fs) from the same start: the
    coordinates agree with OpenMM's Reference platform to 1e-6 nm."""
    topology, positions = villin_in_vacuum()
    n = topology.getNumAtoms()
    velocities = np.random.default_rng(0).normal(0.0, 0.5, (n, 3))
    system = amber14().create_system((topology, positions), remove_cm_motion=False, velocities=velocities)
    reference_system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False, removeCMMotion=False)
    dt = 0.001
    integrator = openmm.CustomIntegrator(dt)  # velocity Verlet (OpenMM's VerletIntegrator is leapfrog)
    integrator.addUpdateContextState()
    integrator.addComputePerDof("v", "v+0.5*dt*f/m")
    integrator.addComputePerDof("x", "x+dt*v")
    integrator.addComputePerDof("v", "v+0.5*dt*f/m")
    context = openmm.Context(reference_system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocities(velocities)
    integrator.step(100)
    expected = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    trajectory = md.simulate(system, md.VelocityVerlet(dt), 100)
    assert np.abs(np.asarray(trajectory.state.coords) - expected).max() < 1e-6


def test_float32_forces_within_openmm_cpu_accuracy():
    """float32 forces against the Reference platform's float64 at the same (float32) positions:
    relative RMS error ≤ 1e-5 (OpenMM's CPU platform: ~2e-6). The state of a float32 run is its
    float32 coordinates; their rounding (~2e-7 nm) alone moves stiff bond forces by ~3e-5."""
    topology, positions = villin_in_vacuum()
    positions = np.asarray(positions.value_in_unit(unit.nanometer), np.float32).astype(np.float64)
    _, expected = reference(topology, positions, ("amber14-all.xml", "amber14/tip3p.xml"),
                            nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    system = amber14().create_system((topology, positions), dtype=jnp.float32)
    forces = np.asarray(jax.jit(md.forces)(system), np.float64)
    assert system.coords.dtype == jnp.float32
    error = np.sqrt(np.mean(np.sum((forces - expected) ** 2, 1)) / np.mean(np.sum(expected**2, 1)))
    assert error <= 1e-5


@functools.lru_cache(maxsize=None)
def alanine_dipeptide():
    """ACE-ALA-NME built from internal coordinates by the fit_forcefield example (OpenMM-minimised)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from fit_forcefield import build_alanine_dipeptide

    return build_alanine_dipeptide()


def test_capped_peptide_in_vacuum_matches_openmm():
    topology, positions = alanine_dipeptide()
    files = ("amber14-all.xml", "amber14/tip3p.xml")
    expected, expected_forces = reference(topology, positions, files, nonbondedMethod=app.NoCutoff,
                                          constraints=None, rigidWater=False)
    system = amber14().create_system((topology, positions))
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert np.abs(np.asarray(jax.jit(md.forces)(system)) - expected_forces).max() < 1e-4


@pytest.mark.slow  # ~12-15 s; the default suite keeps the 7-minute budget
def test_gradient_of_a_loss_through_a_run():
    """d(loss)/dθ through 50 steps of dynamics of the capped peptide for a torsion k and a
    template charge, against central finite differences (float64, 1e-5)."""
    topology, positions = alanine_dipeptide()
    velocities = np.random.default_rng(1).normal(0.0, 0.5, (topology.getNumAtoms(), 3))
    system = amber14().create_system((topology, positions), remove_cm_motion=False, velocities=velocities)
    reference_coords = system.coords

    def loss(p):
        trajectory = md.simulate(system.with_parameters(p), md.VelocityVerlet(0.001), 50)
        return jnp.sum((trajectory.state.coords - reference_coords) ** 2)

    params = system.force_field.parameters
    grads = jax.jit(jax.grad(loss))(params)
    value = jax.jit(loss)
    labels = amber14().labels
    for section, field, entry in [("PeriodicTorsionForce", "k",
                                   int(np.argmax(np.abs(np.asarray(grads["PeriodicTorsionForce"]["k"]))))),
                                  ("Residues", "charge", labels["Residues"].index("ALA:CA"))]:
        x = float(params[section][field][entry])
        h = 1e-4 * max(abs(x), 1e-2)

        def at(v, section=section, field=field, entry=entry):
            p = dict(params)
            p[section] = dict(p[section])
            p[section][field] = p[section][field].at[entry].set(v)
            return float(value(p))

        fd = (8 * (at(x + h) - at(x - h)) - (at(x + 2 * h) - at(x - 2 * h))) / (12 * h)
        assert float(grads[section][field][entry]) != 0.0
        assert float(grads[section][field][entry]) == pytest.approx(fd, rel=1e-5), (section, field)


@pytest.mark.slow  # ~12-15 s; the default suite keeps the 7-minute budget
def test_amber19_with_cmap_matches_openmm():
    topology, positions = villin_in_vacuum()
    files = ("amber19-all.xml",)
    expected, expected_forces = reference(topology, positions, files, nonbondedMethod=app.NoCutoff,
                                          constraints=None, rigidWater=False)
    assert "CMAPTorsionForce" in expected
    system = md.ForceField(*files).create_system((topology, positions))
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6), name
    assert np.abs(np.asarray(jax.jit(md.forces)(system)) - expected_forces).max() < 1e-4


@pytest.mark.slow  # ~60 s: the tabulated LJ runs on the pure-JAX pair kernel
def test_charmm36_through_forcefield_matches_openmm_and_differentiates_its_entries(tmp_path):
    """CHARMM36 (terminal patches, Urey-Bradley terms in the HarmonicBondForce, CMAP, NBFIX
    tables) through `ForceField`: every term equals OpenMM's; the gradient reaches bond, angle,
    torsion and CMAP entries and charges — those of the patches included — by finite
    differences; Urey-Bradley terms keep their numbers; the written XML gives OpenMM's energies."""
    topology, positions = villin_in_vacuum()
    files = ("charmm36.xml",)
    expected, expected_forces = reference(topology, positions, files, nonbondedMethod=app.NoCutoff,
                                          constraints=None, rigidWater=False)
    ff = md.ForceField(*files)
    system = ff.create_system((topology, positions))
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6), name
    assert np.abs(np.asarray(jax.jit(md.forces)(system)) - expected_forces).max() < 1e-4

    energy = jax.jit(lambda p: md.potential_energy(system.with_parameters(p)))
    grads = jax.grad(energy)(ff.parameters)
    patch = next(k for k, label in enumerate(ff.labels["Residues"]) if label.startswith("patch NTER:"))
    largest = lambda section, field: np.unravel_index(int(np.argmax(np.abs(grads[section][field]))),  # noqa: E731
                                                      grads[section][field].shape)
    for section, field, entry in [("HarmonicBondForce", "k", largest("HarmonicBondForce", "k")),
                                  ("HarmonicAngleForce", "angle", largest("HarmonicAngleForce", "angle")),
                                  ("PeriodicTorsionForce", "k", largest("PeriodicTorsionForce", "k")),
                                  ("Residues", "charge", patch),
                                  ("CMAPTorsionForce", "map", largest("CMAPTorsionForce", "map"))]:
        def shifted(h):
            values = jax.tree_util.tree_map(lambda x: x, ff.parameters)
            values[section][field] = values[section][field].at[entry].add(h)
            return float(energy(values))
        h = 1e-5 * max(1.0, abs(float(ff.parameters[section][field][entry])))
        fd = (shifted(h) - shifted(-h)) / (2 * h)
        assert fd != 0.0 and float(grads[section][field][entry]) == pytest.approx(fd, rel=1e-6), (section, field)

    path = tmp_path / "trained.xml"
    changed = jax.tree_util.tree_map(lambda x: x, ff.parameters)
    changed["Residues"]["charge"] = changed["Residues"]["charge"].at[patch].add(0.01)
    ff.write_xml(changed, path)
    written, _ = reference(topology, positions, (str(path),), nonbondedMethod=app.NoCutoff, constraints=None,
                           rigidWater=False)
    ours = {k: float(v) for k, v in md.energy_terms(system.with_parameters(changed)).items()}
    assert written["NonbondedForce"] != pytest.approx(expected["NonbondedForce"], rel=1e-9)
    for name, value in written.items():
        assert ours[name] == pytest.approx(value, rel=1e-6), name


@functools.lru_cache(maxsize=None)
def water_box(side=2.0, gap=0.15):
    """The TIP3P waters of the openmm wheel's `tip3p.pdb` whose oxygen lies in [0, side − gap)³ nm,
    in a periodic box of `side` nm (the gap keeps images apart)."""
    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "tip3p.pdb"))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    outside = [r for r in modeller.topology.residues()
               if not np.all((xyz[[a.index for a in r.atoms() if a.element.symbol == "O"][0]] >= 0)
                             & (xyz[[a.index for a in r.atoms() if a.element.symbol == "O"][0]] < side - gap))]
    modeller.delete(outside)
    modeller.topology.setPeriodicBoxVectors(np.eye(3) * side * unit.nanometer)
    return modeller.topology, modeller.positions


@pytest.mark.parametrize("method, force_atol", [pytest.param("CutoffPeriodic", 1e-4, marks=pytest.mark.slow),
                                               pytest.param("Ewald", 1e-3, marks=pytest.mark.slow), ("PME", 1e-3)])
def test_water_box_every_periodic_method_matches_openmm(method, force_atol):
    topology, positions = water_box()
    files = ("amber14-all.xml", "amber14/tip3p.xml")
    expected, expected_forces = reference(topology, positions, files, nonbondedMethod=getattr(app, method),
                                          nonbondedCutoff=0.9, constraints=None, rigidWater=False,
                                          switchDistance=0.8)
    system = amber14().create_system((topology, positions), nonbonded_method=method, nonbonded_cutoff=0.9,
                                     rigid_water=False, switch_distance=0.8)
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    assert set(terms) <= set(expected)  # (OpenMM keeps empty forces: water has no torsions)
    for name, value in expected.items():
        assert terms.get(name, 0.0) == pytest.approx(value, rel=1e-6), name
    forces = np.asarray(jax.jit(md.forces)(system))
    assert np.abs(forces - expected_forces).max() < force_atol


@pytest.mark.slow  # ~100 s: OpenMM's Reference PME on 8,865 atoms, term by term
def test_villin_in_water_with_pme_matches_openmm_charged():
    """Villin in TIP3P without its chloride ions (net charge +2: the neutralising-plasma term),
    PME at OpenMM's α and grid, dispersion correction: every term to 1e-6, forces to 1e-3."""
    pdb = app.PDBFile(VILLIN)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("Cl", "CL")])
    files = ("amber14-all.xml", "amber14/tip3p.xml")
    expected, expected_forces = reference(modeller.topology, modeller.positions, files, nonbondedMethod=app.PME,
                                          nonbondedCutoff=0.9, constraints=None, rigidWater=False)
    system = amber14().create_system(modeller, nonbonded_method="PME", nonbonded_cutoff=0.9, rigid_water=False)
    assert abs(float(jnp.sum(system.atoms.charge)) - 2.0) < 1e-9
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6), name
    forces = np.asarray(jax.jit(md.forces)(system))
    assert np.abs(forces - expected_forces).max() < 1e-3
