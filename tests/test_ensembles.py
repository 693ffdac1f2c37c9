"""Thermostats and integrators beyond LangevinMiddle, against statistics and OpenMM: Bussi's
stochastic velocity rescaling (canonical kinetic-energy mean and variance), Brownian dynamics
(configurational Boltzmann statistics of harmonic bonds), Nosé–Hoover chains (the conserved
extended energy, canonical kinetic energy), and OpenMM's leapfrog Verlet (reproducing its
trajectory with rigid water)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_constraints import follows_openmm
from test_forcefield import amber14, water_box
from test_langevin import KB, argon, block_stats
from test_openmm_systems import app, openmm, unit

jax.config.update("jax_enable_x64", True)


def test_bussi_thermostat_samples_the_canonical_kinetic_energy():
    """An LJ liquid under velocity Verlet + BussiThermostat (τ = 0.1 ps), centre-of-mass motion
    removed: mean KE = N_f/2 k_B T and var KE = N_f/2 (k_B T)², N_f = 3N − 3, each within 4
    standard errors of block averages (200 ps)."""
    temperature = 120.0
    system = argon(temperature=60.0, remove_com_motion=True)
    integrator = md.VelocityVerlet(0.004, coupling=md.BussiThermostat(temperature, 0.1))
    run = md.simulate(system, integrator, 50_000, key=jax.random.PRNGKey(3))
    ke = np.asarray(run.logs["ke"])[100:]
    dof, kt = system.degrees_of_freedom, KB * temperature
    assert dof == 3 * system.n_atoms - 3
    mean, mean_err = block_stats(ke)
    assert abs(mean - dof / 2 * kt) < 4 * mean_err, (mean, dof / 2 * kt, mean_err)
    var, var_err = block_stats((ke - ke.mean()) ** 2)
    assert abs(var - dof / 2 * kt**2) < 4 * var_err, (var, dof / 2 * kt**2, var_err)
    assert mean_err < 0.005 * mean


def test_andersen_is_canonical_and_berendsen_only_in_the_mean():
    """The LJ liquid under velocity Verlet with AndersenThermostat (ν = 5/ps): KE mean and variance
    canonical with N_f = 3N (4 standard errors, 200 ps). Under BerendsenThermostat (τ = 0.1 ps)
    the mean is right but the fluctuations are suppressed (known: it does not sample the
    canonical ensemble); the test pins both facts."""
    temperature = 120.0
    dof, kt = 3 * 64, KB * temperature
    for coupling, canonical in ((md.AndersenThermostat(temperature, 5.0), True),
                                (md.BerendsenThermostat(temperature, 0.1), False)):
        system = argon(temperature=60.0)
        run = md.simulate(system, md.VelocityVerlet(0.004, coupling=coupling), 50_000, key=jax.random.PRNGKey(4))
        ke = np.asarray(run.logs["ke"])[100:]
        mean, mean_err = block_stats(ke)
        var, var_err = block_stats((ke - ke.mean()) ** 2)
        if canonical:
            assert abs(mean - dof / 2 * kt) < 4 * mean_err, (mean, dof / 2 * kt, mean_err)
            assert abs(var - dof / 2 * kt**2) < 4 * var_err, (var, dof / 2 * kt**2, var_err)
        else:
            assert abs(mean - dof / 2 * kt) < 0.02 * dof / 2 * kt
            assert var < 0.5 * dof / 2 * kt**2, var


def test_brownian_dynamics_samples_harmonic_bonds():
    """Independent harmonic dimers under Brownian dynamics: ⟨½ k (r − r0)²⟩ = k_B T/2 per
    bond (stiff bonds: the r² Jacobian shifts it by O(k_B T/(k r0²)) = 0.3 %) within 4 standard
    errors, and the overdamped dynamics leaves the bonds' centre of mass diffusing freely."""
    n_pairs, r0, k, temperature = 64, 0.15, 2000.0, 300.0
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.0, 4.0, (n_pairs, 3))
    direction = rng.normal(size=(n_pairs, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    coords = np.concatenate([centres, centres + r0 * direction])
    bonds = md.HarmonicBonds(indices=np.stack([np.arange(n_pairs), np.arange(n_pairs) + n_pairs], 1),
                             r0=np.full(n_pairs, r0), k=np.full(n_pairs, k))
    system = md.System(atoms=md.Atoms(mass=jnp.full(2 * n_pairs, 12.0)), coords=jnp.asarray(coords),
                       boundary=md.NoBoundary(), bonded_inters=[bonds],
                       loggers={"bond": md.ObservableLogger(
                           lambda s, sys: jnp.mean(sys.bonded_inters[0].energy(
                               s.coords[jnp.asarray(sys.bonded_inters[0].indices.array)], sys.boundary)), every=5)})
    run = md.simulate(system, md.Brownian(0.0005, temperature, 100.0), 40_000, key=jax.random.PRNGKey(1))
    energy = np.asarray(run.logs["bond"])[100:]
    mean, err = block_stats(energy)
    expected = KB * temperature / 2 * (1 + 2 * KB * temperature / (k * r0**2))  # ⟨x²⟩ with the r² weight
    assert abs(mean - expected) < 4 * err + 0.01 * expected, (mean, expected, err)
    assert err < 0.02 * mean


@pytest.mark.slow  # ~5 s; the LangevinMiddle trajectory test covers OpenMM agreement by default
def test_leapfrog_verlet_reproduces_openmms_verlet_integrator():
    """Rigid water: 20 steps of LeapfrogVerlet from OpenMM's positions and half-step velocities
    follow OpenMM's VerletIntegrator (Reference platform, constraint tolerance 1e-10) to 1e-6
    nm and 1e-3 nm/ps."""
    dx, dv = follows_openmm(openmm.VerletIntegrator(0.002), md.LeapfrogVerlet(0.002), seed=2)
    assert dx < 1e-6 and dv < 1e-3, (dx, dv)


def test_nose_hoover_chain_conserves_its_energy_and_samples_the_canonical_kinetic_energy():
    """An LJ liquid under NoseHooverChain (ω = 10/ps, chain of 3, 3 × 7 sub-steps), centre-of-
    mass motion removed, 200 ps at 2 fs from 60 K: the extended energy drifts by less than
    0.05 kJ/mol per atom per ns and fluctuates 100× less than the total energy, which the
    thermostat changes; mean and variance of KE are canonical with N_f = 3N − 3 (4 standard
    errors of block averages)."""
    temperature = 120.0
    system = argon(temperature=60.0, remove_com_motion=True)
    system = eqx.tree_at(lambda s: s.loggers, system, {"ke": md.KineticEnergyLogger(10),
                                                       "h": md.ConservedEnergyLogger(10), "e": md.TotalEnergyLogger(10)})
    run = md.simulate(system, md.NoseHooverChain(0.002, temperature, 10.0), 100_000)
    h, e = np.asarray(run.logs["h"])[1:], np.asarray(run.logs["e"])[1:]  # (the first step removes the COM velocity)
    ns = 100_000 * 0.002 / 1000
    drift = np.polyfit(np.arange(len(h)), h, 1)[0] * len(h) / ns / system.n_atoms
    assert abs(drift) < 0.05, drift
    assert np.std(h) < 0.01 * np.std(e), (np.std(h), np.std(e))
    ke = np.asarray(run.logs["ke"])[1000:]
    dof, kt = system.degrees_of_freedom, KB * temperature
    mean, mean_err = block_stats(ke)
    assert abs(mean - dof / 2 * kt) < 4 * mean_err, (mean, dof / 2 * kt, mean_err)
    var, var_err = block_stats((ke - ke.mean()) ** 2)
    assert abs(var - dof / 2 * kt**2) < 4 * var_err, (var, dof / 2 * kt**2, var_err)
    # Its thermostat variables carry over to a continued run.
    more = md.simulate(system, md.NoseHooverChain(0.002, temperature, 10.0), 10, start=run.state)
    assert float(more.state.integrator_state.positions[0]) == pytest.approx(
        float(run.state.integrator_state.positions[0]), abs=0.1)
    assert float(run.state.integrator_state.positions[0]) != 0.0
    with pytest.raises(ValueError, match="yoshida_suzuki"):
        md.NoseHooverChain(0.002, temperature, 10.0, yoshida_suzuki=4)


@pytest.mark.slow  # ~14 s
def test_bussi_brownian_and_nose_hoover_are_reproducible_and_differentiable():
    """Same key, same run; the gradient with respect to the target temperature through 50 steps
    against a central difference (noise fixed by the key)."""
    system = argon(n_side=3)

    def loss(temperature, integrator_of):
        run = md.simulate(system, integrator_of(temperature), 50, key=jax.random.PRNGKey(9))
        return jnp.sum(run.state.coords[:, 0] ** 2) + jnp.sum(run.state.velocities**2)

    for integrator_of in (lambda t: md.VelocityVerlet(0.004, coupling=md.BussiThermostat(t, 0.1)),
                          lambda t: md.Brownian(0.002, t, 50.0), lambda t: md.NoseHooverChain(0.004, t, 10.0)):
        assert float(loss(120.0, integrator_of)) == float(loss(120.0, integrator_of))
        grad = float(jax.grad(loss)(120.0, integrator_of))
        h = 1e-3
        fd = (float(loss(120.0 + h, integrator_of)) - float(loss(120.0 - h, integrator_of))) / (2 * h)
        assert grad == pytest.approx(fd, rel=1e-5)


def openmm_water_start(topology, positions, seed, pressure_bar=None):
    """OpenMM CPU (2 threads) on rigid TIP3P water (amber14, PME 0.9 nm), LangevinMiddle at
    300 K, 2 fs, γ = 1/ps, with a Monte Carlo barostat when `pressure_bar` is given: minimised
    (tolerance 10) and given velocities at 300 K. (context, integrator, positions nm,
    velocities nm/ps) of that start."""
    reference = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9, rigidWater=True)
    if pressure_bar is not None:
        reference.addForce(openmm.MonteCarloBarostat(pressure_bar, 300.0, 25))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0, 0.002)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(reference, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed + 1)
    start = context.getState(getPositions=True, getVelocities=True)
    return (context, integrator, start.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            start.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


def oxygen_rdf(frames, box, r_max=0.95, n_bins=38):
    return md.observables.rdf_histogram(frames, md.CubicBoundary(box), r_max, n_bins)


@pytest.mark.slow  # ~3 minutes: 25 ps of rigid TIP3P in each engine
def test_water_oxygen_rdf_follows_openmm():
    """Rigid TIP3P (the wheel's tip3p.pdb cut to a 2 nm box, PME 0.9 nm) under LangevinMiddle at
    300 K from the same OpenMM-minimised start: the O–O g(r) of 20 ps after 5 ps of
    equilibration agrees with OpenMM's: the first peak's position to one bin (0.025 nm) and
    height within 5 %, and the curves within 0.1 everywhere (their statistical noise is ~0.05)."""
    topology, positions = water_box()
    oxygens = np.array([a.index for a in topology.atoms() if a.element.symbol == "O"])
    context, integrator, x0, v0 = openmm_water_start(topology, positions, seed=5)
    integrator.step(2500)
    frames = []
    for _ in range(100):
        integrator.step(100)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    theirs = np.asarray(oxygen_rdf(np.stack(frames)[:, oxygens], 2.0)[1])

    system = amber14().create_system((topology, x0), nonbonded_method="PME", nonbonded_cutoff=0.9,
                                     rigid_water=True, velocities=v0)
    system = eqx.tree_at(lambda s: s.loggers, system, {"x": md.CoordinatesLogger(100)})
    lm = md.LangevinMiddle(0.002, 300.0, 1.0)
    warm = md.simulate(system, lm, 2500, key=jax.random.PRNGKey(11))
    run = md.simulate(system, lm, 10_000, key=jax.random.PRNGKey(12), start=warm.state)
    r, ours = (np.asarray(a) for a in oxygen_rdf(np.asarray(run.logs["x"])[:, oxygens], 2.0))
    peak_ours, peak_theirs = int(np.argmax(ours)), int(np.argmax(theirs))
    assert abs(peak_ours - peak_theirs) <= 1
    assert ours[peak_ours] == pytest.approx(theirs[peak_theirs], rel=0.05)
    assert np.abs(ours - theirs)[r > 0.24].max() < 0.1, np.round(ours - theirs, 3)
