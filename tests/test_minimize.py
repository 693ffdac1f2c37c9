"""`diffmd.minimize`: OpenMM's LocalEnergyMinimizer criterion (RMS force ≤ tolerance), minima as
low as OpenMM's from the same start, constraints kept, and gradients of a loss of the minimum
(implicit function theorem) against finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_forcefield import alanine_dipeptide, amber14, water_box
from test_openmm_systems import KJ, app, openmm, unit

jax.config.update("jax_enable_x64", True)


def rms_force(system):
    forces = np.asarray(md.forces(system))
    return float(np.sqrt(np.mean(forces**2)))


def openmm_minimum(topology, positions, tolerance, **args):
    system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(topology, **args)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)


@pytest.mark.slow  # ~7 s; the default suite's budget (minimize runs there through its gradient test)
def test_minimum_meets_openmms_criterion_and_energy():
    """The capped peptide in vacuum from a perturbed start: RMS force below the tolerance and an
    energy within 0.5 kJ/mol of OpenMM's minimiser from the same start (or lower)."""
    topology, positions = alanine_dipeptide()
    start = np.asarray(positions) + np.random.default_rng(0).normal(
        0.0, 0.01, (topology.getNumAtoms(), 3))
    system = amber14().create_system((topology, start))
    before = float(md.potential_energy(system))
    result = md.minimize(system, tolerance=1.0)
    after = float(md.potential_energy(result))
    assert after < before - 100.0
    assert rms_force(result) <= 1.0
    expected = openmm_minimum(topology, start * unit.nanometer, 1.0, nonbondedMethod=app.NoCutoff,
                              constraints=None, rigidWater=False)
    assert after < expected + 0.5, (after, expected)
    capped = md.minimize(system, tolerance=1e-6, max_iterations=5)  # stops after 5 iterations
    assert float(md.potential_energy(capped)) > after


@pytest.mark.slow  # ~23 s
def test_minimize_keeps_constraints_in_a_periodic_box():
    """Rigid water with PME: the result is on its constraints (float64, 1e-12) and minimised
    (RMS of the unconstrained force components far below the start's)."""
    system = amber14().create_system(water_box(), nonbonded_method="PME", nonbonded_cutoff=0.9, rigid_water=True)
    result = md.minimize(system, tolerance=10.0)
    assert float(result.constraints.violation(result.coords, result.boundary)) < 1e-12
    assert float(md.potential_energy(result)) < float(md.potential_energy(system)) - 100.0


def radius_of_gyration(x):
    centred = x - jnp.mean(x, axis=0)
    return jnp.sqrt(jnp.mean(jnp.sum(centred**2, axis=1)))


def with_entry(params, section, field, entry, value):
    p = dict(params)
    p[section] = dict(p[section])
    p[section][field] = p[section][field].at[entry].set(value)
    return p


def one_water():
    topology, positions = water_box()
    modeller = app.Modeller(topology, positions)
    modeller.delete(list(modeller.topology.residues())[1:])
    modeller.topology.setPeriodicBoxVectors(None)
    return modeller.topology, modeller.positions


@pytest.mark.slow  # ~11 s
def test_gradient_of_a_loss_of_the_minimum_is_exact():
    """A flexible water in vacuum minimised to rounding: d(Rg of the minimum)/d(every bond and
    angle number of the force field) against central differences to 1e-6."""
    system = amber14().create_system(one_water(), rigid_water=False)

    def loss(params):
        return radius_of_gyration(md.minimize(system.with_parameters(params), tolerance=1e-9).coords)

    params = system.force_field.parameters
    grads = jax.grad(loss)(params)
    for section, field in [("HarmonicBondForce", "length"), ("HarmonicAngleForce", "angle")]:
        entry = int(np.argmax(np.abs(np.asarray(grads[section][field]))))
        x = float(params[section][field][entry])
        h = 1e-4 * x
        fd = (float(loss(with_entry(params, section, field, entry, x + h)))
              - float(loss(with_entry(params, section, field, entry, x - h)))) / (2 * h)
        assert float(grads[section][field][entry]) == pytest.approx(fd, rel=1e-6), (section, field)


@pytest.mark.slow  # ~25 s
def test_gradient_of_a_loss_of_a_peptides_minimum():
    """The capped peptide: d(Rg of the minimum)/dθ for a torsion k and a template charge against
    central differences, within 2 % (the differences themselves spread by 1 % with the step,
    from where each minimisation stops)."""
    topology, positions = alanine_dipeptide()
    system = amber14().create_system((topology, positions))

    def loss(params):
        return radius_of_gyration(md.minimize(system.with_parameters(params), tolerance=1e-5).coords)

    params = system.force_field.parameters
    grads = jax.grad(loss)(params)
    labels = amber14().labels
    for section, field, entry in [("PeriodicTorsionForce", "k",
                                   int(np.argmax(np.abs(np.asarray(grads["PeriodicTorsionForce"]["k"]))))),
                                  ("Residues", "charge", labels["Residues"].index("ALA:CA"))]:
        x = float(params[section][field][entry])
        h = 1e-2 * max(abs(x), 1e-1)
        fd = (float(loss(with_entry(params, section, field, entry, x + h)))
              - float(loss(with_entry(params, section, field, entry, x - h)))) / (2 * h)
        grad = float(grads[section][field][entry])
        assert grad != 0.0
        assert grad == pytest.approx(fd, rel=2e-2), (section, field)
