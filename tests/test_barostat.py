"""`MonteCarloBarostat`: the isothermal–isobaric volume distribution of an ideal gas (atoms and
rigid dimers: the acceptance rule's P ΔV and N_mol ln V terms), rigid molecules and
constraints kept through volume moves, continuation of a run with its box, gradients through
a run with volume moves, clear errors; and (slow) the density and O–O RDF of the openmm
wheel's TIP3P box at 300 K and 1 bar against OpenMM's."""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_ensembles import openmm_water_start
from test_forcefield import amber14, water_box
from test_langevin import KB, argon, block_stats

jax.config.update("jax_enable_x64", True)

TEMPERATURE = 120.0


def npt_gas(molecules: int, pressure_bar: float, n_steps: int = 40_000, seed: int = 0):
    """64 free argon atoms (or 32 bonded dimers when molecules=32) with a volume move every
    step; the volumes visited."""
    system = argon(interacting=False, temperature=TEMPERATURE)
    if molecules != system.n_atoms:
        pairs = np.arange(system.n_atoms).reshape(-1, 2)
        distances = np.linalg.norm(np.asarray(system.coords)[pairs[:, 1]] - np.asarray(system.coords)[pairs[:, 0]], axis=1)
        bonds = md.HarmonicBonds(indices=pairs, r0=distances, k=np.full(len(pairs), 1000.0))
        system = eqx.tree_at(lambda s: s.bonded_inters, system, (bonds,))
    system = eqx.tree_at(lambda s: s.loggers, system, {"volume": md.VolumeLogger(1)})
    barostat = md.MonteCarloBarostat(pressure_bar, TEMPERATURE, frequency=1)
    run = md.simulate(system, md.LangevinMiddle(0.002, TEMPERATURE, 5.0, coupling=barostat), n_steps,
                      key=jax.random.PRNGKey(seed))
    return np.asarray(run.logs["volume"])[n_steps // 10:], run


@pytest.mark.parametrize("molecules", [64, 32])
def test_ideal_gas_volume_distribution(molecules):
    """For N_mol independent molecules at pressure P the volume density is ∝ V^N_mol e^(−PV/kT),
    a Gamma distribution: ⟨V⟩ = (N_mol + 1) kT/P and var V = (N_mol + 1) (kT/P)². Both within 4
    standard errors of 10 block averages over 36,000 volume moves."""
    pressure_bar = 300.0
    kt_over_p = KB * TEMPERATURE / (pressure_bar * md.OPENMM_UNITS.energy_density_per_bar)
    volumes, run = npt_gas(molecules, pressure_bar)
    mean, mean_error = block_stats(volumes)
    assert abs(mean - (molecules + 1) * kt_over_p) < 4 * mean_error, (mean, (molecules + 1) * kt_over_p, mean_error)
    var, var_error = block_stats((volumes - volumes.mean()) ** 2)
    assert abs(var - (molecules + 1) * kt_over_p**2) < 4 * var_error, (var, (molecules + 1) * kt_over_p**2, var_error)
    # The step size adapted toward an acceptance between 25 and 75 %.
    own = run.state.couplings[0]
    assert 0.2 < int(own.total_accepted) / int(own.total_attempted) < 0.8


def test_molecules_are_the_connected_groups_of_the_topology():
    topology, positions = water_box()
    system = amber14().create_system((topology, positions), nonbonded_method="PME", nonbonded_cutoff=0.9,
                                     rigid_water=True)
    labels = system.molecules()
    waters = [[a.index for a in r.atoms()] for r in topology.residues()]
    assert labels.max() + 1 == len(waters)
    for number, atoms in enumerate(waters):
        assert np.all(labels[atoms] == number)


@pytest.mark.slow  # ~12 s
def test_volume_moves_keep_water_rigid_and_continue_with_their_box():
    """Rigid TIP3P under LangevinMiddle with a volume move every 5 steps: the box changes, every
    constraint holds to 1e-10 relative after the moves (molecules are moved whole), and a run
    continued from `start=` keeps the box it had reached."""
    topology, positions = water_box()
    system = amber14().create_system((topology, positions), nonbonded_method="PME", nonbonded_cutoff=0.9,
                                     rigid_water=True)
    system = eqx.tree_at(lambda s: s.loggers, system, {"volume": md.VolumeLogger(5)})
    integrator = md.LangevinMiddle(0.002, 300.0, 1.0, coupling=md.MonteCarloBarostat(1.0, 300.0, frequency=5))
    run = md.simulate(system, integrator, 100, key=jax.random.PRNGKey(0))
    volumes = np.asarray(run.logs["volume"])
    assert int(run.state.couplings[0].total_attempted) == 20
    assert len(np.unique(volumes)) > 1 and volumes.min() < 8.0  # the 2 nm box with a gap shrinks
    assert float(run.state.boundary.volume) == pytest.approx(volumes[-1], rel=1e-12)
    distances = md.observables.pair_distances(run.state.coords, run.state.boundary, system.constraints.pairs.array)
    assert np.max(np.abs(np.asarray(distances) / np.asarray(system.constraints.distances) - 1)) < 1e-10
    more = md.simulate(system, integrator, 10, key=jax.random.PRNGKey(1), start=run.state)
    first = float(jnp.prod(more.state.boundary.sides))
    assert first == pytest.approx(volumes[-1], rel=0.05)  # continued from the reached box, not 8 nm³
    assert int(more.state.couplings[0].total_attempted) == 22  # the counters carried on


@pytest.mark.slow  # ~12 s; the default suite keeps the 7-minute budget
def test_gradient_through_a_run_with_volume_moves_matches_finite_differences():
    """d⟨V⟩/dP and d(potential energy)/dσ through 200 steps of an LJ liquid with a volume move
    every 10 steps: the accept/reject decisions are held by the key, so for small changes the
    run is a smooth function of the parameters and the gradient matches central differences."""
    base = argon(n_side=4, density=18.0)

    def loss(sigma, pressure):
        system = eqx.tree_at(lambda s: s.atoms.sigma, base, jnp.full_like(base.atoms.sigma, sigma))
        integrator = md.LangevinMiddle(0.002, TEMPERATURE, 2.0, coupling=md.MonteCarloBarostat(pressure, TEMPERATURE, 10))
        run = md.simulate(system, integrator, 200, key=jax.random.PRNGKey(3))
        return run.state.potential_energy + run.state.boundary.volume

    grads = jax.grad(loss, argnums=(0, 1))(0.34, 200.0)
    for index, (x, h) in enumerate([(0.34, 1e-7), (200.0, 1e-5)]):
        args = [0.34, 200.0]
        args[index] = x + h
        up = float(loss(*args))
        args[index] = x - h
        down = float(loss(*args))
        assert float(grads[index]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


def test_a_barostat_needs_a_periodic_box():
    system = md.System(atoms=md.Atoms.uniform(2, mass=1.0), coords=jnp.zeros((2, 3)).at[1, 0].set(1.0),
                       boundary=md.NoBoundary())
    integrator = md.LangevinMiddle(0.002, 300.0, 1.0, coupling=md.MonteCarloBarostat(1.0, 300.0))
    with pytest.raises(ValueError, match="periodic 3-D box"):
        md.simulate(system, integrator, 10, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="frequency"):
        md.MonteCarloBarostat(1.0, 300.0, frequency=0)


def water_rdf(frames, sides, oxygens, r_max=1.2, n_bins=48):
    """O–O g(r) averaged over frames, each in its own cubic box."""
    curves = [md.observables.rdf_histogram(frame[oxygens], md.CubicBoundary(side), r_max, n_bins)
              for frame, side in zip(frames, sides)]
    return np.asarray(curves[0][0]), np.mean([np.asarray(g) for _, g in curves], axis=0)


@pytest.mark.slow  # ~6 minutes: 25 ps of the 2,685-atom box in each engine
def test_tip3p_density_and_rdf_at_one_bar_follow_openmm():
    """The openmm wheel's tip3p.pdb (895 rigid TIP3P waters, 3 nm box), amber14 + TIP3P, PME
    0.9 nm with the dispersion correction, LangevinMiddle 2 fs at 300 K, 1 bar with a volume
    move every 25 steps, from the same OpenMM-minimised start: after 5 ps, the mean density
    of 20 ps agrees with OpenMM's within 4 combined standard errors (10 block averages each)
    and within 1 %; the O–O g(r) of the run agrees with OpenMM's (first peak's position to one
    bin of 0.025 nm, its height within 5 %, curves within 0.08 everywhere)."""
    from openmm import app, unit

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "tip3p.pdb"))
    oxygens = np.array([a.index for a in pdb.topology.atoms() if a.element.symbol == "O"])
    total_mass = sum(a.element.mass.value_in_unit(unit.dalton) for a in pdb.topology.atoms())
    context, integrator, x0, v0 = openmm_water_start(pdb.topology, pdb.positions, seed=3, pressure_bar=1.0)
    integrator.step(2500)
    sides, frames = [], []
    for step in range(1, 401):
        integrator.step(25)
        state = context.getState(getPositions=step % 4 == 0)
        sides.append(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)[0, 0])
        if step % 4 == 0:
            frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    sides = np.asarray(sides)
    theirs = total_mass / sides**3 * md.AMU_PER_NM3_IN_G_PER_CM3
    r, rdf_theirs = water_rdf(frames, sides[3::4], oxygens)

    system = amber14().create_system((pdb.topology, x0), nonbonded_method="PME", nonbonded_cutoff=0.9,
                                     rigid_water=True, velocities=v0, dtype="float32")
    system = eqx.tree_at(lambda s: s.loggers, system, {"rho": md.DensityLogger(25), "x": md.CoordinatesLogger(100),
                                                       "v": md.VolumeLogger(100)})
    integrator = md.LangevinMiddle(0.002, 300.0, 1.0, coupling=md.MonteCarloBarostat(1.0, 300.0, 25))
    warm = md.simulate(system, integrator, 2500, key=jax.random.PRNGKey(1))
    run = md.simulate(system, integrator, 10_000, key=jax.random.PRNGKey(2), start=warm.state)
    ours = np.asarray(run.logs["rho"], np.float64) * md.AMU_PER_NM3_IN_G_PER_CM3
    (mean_ours, error_ours), (mean_theirs, error_theirs) = block_stats(ours), block_stats(theirs)
    difference = abs(mean_ours - mean_theirs)
    print(f"density (g/cm³): diffmd {mean_ours:.4f} ± {error_ours:.4f}, OpenMM {mean_theirs:.4f} ± {error_theirs:.4f}; "
          f"acceptance {int(run.state.couplings[0].total_accepted)}/{int(run.state.couplings[0].total_attempted)}")
    assert difference < 4 * np.hypot(error_ours, error_theirs), (mean_ours, error_ours, mean_theirs, error_theirs)
    assert difference < 0.01 * mean_theirs
    assert 0.95 < mean_ours < 1.02  # TIP3P with PME and the dispersion correction: ~0.98 g/cm³

    _, rdf_ours = water_rdf(np.asarray(run.logs["x"], np.float64), np.cbrt(np.asarray(run.logs["v"], np.float64)),
                            oxygens)
    peak_ours, peak_theirs = int(np.argmax(rdf_ours)), int(np.argmax(rdf_theirs))
    assert abs(peak_ours - peak_theirs) <= 1
    assert rdf_ours[peak_ours] == pytest.approx(rdf_theirs[peak_theirs], rel=0.05)
    assert np.abs(rdf_ours - rdf_theirs)[r > 0.24].max() < 0.08, np.round(rdf_ours - rdf_theirs, 3)
