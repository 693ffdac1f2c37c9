"""Distance constraints (bonds to hydrogen, rigid water): what `create_system` makes of OpenMM's
constraints, how exactly positions and velocities are put on them (float64 and float32), a
trajectory against OpenMM's, energy conservation, the kinetic-energy distribution with the
right degrees of freedom, and gradients through constrained runs against finite differences."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_forcefield import alanine_dipeptide, amber14, water_box
from test_langevin import block_stats
from test_openmm_systems import app, openmm, unit

jax.config.update("jax_enable_x64", True)

KB = md.units.OPENMM_UNITS.boltzmann
FILES = ("amber14-all.xml", "amber14/tip3p.xml")


def openmm_constraints(topology, **args):
    system = app.ForceField(*FILES).createSystem(topology, **args)
    rows = [system.getConstraintParameters(k) for k in range(system.getNumConstraints())]
    return np.array([r[:2] for r in rows]), np.array([r[2].value_in_unit(unit.nanometer) for r in rows])


def bond_errors(constraints, coords, velocities, boundary):
    """(max relative distance error, max |relative velocity along the bond| / |relative velocity|)."""
    p = constraints.pairs.array
    r = boundary.vector(coords[p[:, 0]], coords[p[:, 1]])
    length = jnp.linalg.norm(r, axis=-1)
    dv = velocities[p[:, 1]] - velocities[p[:, 0]]
    along = jnp.abs(jnp.sum(r * dv, -1)) / (length * jnp.linalg.norm(dv, axis=-1))
    return float(constraints.violation(coords, boundary)), float(jnp.max(along))


def test_create_system_takes_openmms_constraints_and_counts_degrees_of_freedom():
    topology, positions = alanine_dipeptide()
    pairs, distances = openmm_constraints(topology, constraints=app.HBonds)
    system = amber14().create_system((topology, positions), constraints="HBonds")
    assert isinstance(system.constraints, md.DistanceConstraints)
    np.testing.assert_array_equal(system.constraints.pairs.array, pairs)
    np.testing.assert_allclose(np.asarray(system.constraints.distances), distances, rtol=1e-15)
    assert system.degrees_of_freedom == 3 * system.n_atoms - len(pairs) - 3  # and the centre of mass
    # the constrained bonds leave the HarmonicBondForce, as in OpenMM: energies still agree
    from test_forcefield import reference
    expected, _ = reference(topology, positions, FILES, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    terms = {k: float(v) for k, v in md.energy_terms(system).items()}
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name

    topology, positions = water_box()
    pairs, distances = openmm_constraints(topology, nonbondedMethod=app.CutoffPeriodic, rigidWater=True)
    waters = amber14().create_system((topology, positions), nonbonded_method="CutoffPeriodic", rigid_water=True)
    assert len(pairs) == 3 * topology.getNumResidues()
    np.testing.assert_allclose(np.asarray(waters.constraints.distances), distances, rtol=1e-15)
    assert [g.atoms.shape for g in waters.constraints.clusters] == [(topology.getNumResidues(), 3)]
    assert waters.degrees_of_freedom == 3 * waters.n_atoms - len(pairs) - 3


@pytest.mark.parametrize("dtype, tolerance", [pytest.param(jnp.float64, 1e-12, marks=pytest.mark.slow),
                                              (jnp.float32, 1e-5)])
def test_positions_and_velocities_are_put_on_the_constraints(dtype, tolerance):
    """Rigid water and bonds to hydrogen, from steps of 0.005 nm per atom (a 2 fs step of a fast
    hydrogen): distances to `tolerance` relative, relative velocities along the bonds likewise."""
    rng = np.random.default_rng(0)
    systems = [amber14().create_system(water_box(), nonbonded_method="CutoffPeriodic", rigid_water=True,
                                       dtype=dtype)]
    if dtype == jnp.float64:  # (float32 on water alone: the default suite's time)
        systems.append(amber14().create_system(alanine_dipeptide(), constraints="HBonds", dtype=dtype))
    for system in systems:
        c, box = system.constraints, system.boundary
        inv_mass = (1.0 / system.atoms.mass)[:, None].astype(dtype)
        start = c.positions(system.coords, system.coords, inv_mass, box)  # PDB rounding: 1e-3 off
        moved = start + jnp.asarray(rng.normal(0.0, 0.005, start.shape), dtype)
        coords = jax.jit(lambda new, old: c.positions(new, old, inv_mass, box))(moved, start)
        velocities = c.velocities(coords, jnp.asarray(rng.normal(0.0, 1.0, start.shape), dtype), inv_mass, box)
        distance_error, velocity_error = bond_errors(c, coords, velocities, box)
        assert distance_error < tolerance and velocity_error < tolerance
        assert float(c.violation(start, box)) < tolerance


def follows_openmm(openmm_integrator, integrator, n_steps=20, seed=1):
    """Rigid water (switched cutoff, no centre-of-mass removal) run `n_steps` by OpenMM's
    Reference platform (constraint tolerance 1e-10) and by diffmd from OpenMM's start on the
    constraints: (max position difference nm, max velocity difference nm/ps)."""
    topology, positions = water_box()
    reference = app.ForceField(*FILES).createSystem(topology, nonbondedMethod=app.CutoffPeriodic,
                                                    nonbondedCutoff=0.9, rigidWater=True, switchDistance=0.8,
                                                    removeCMMotion=False)
    openmm_integrator.setConstraintTolerance(1e-10)
    context = openmm.Context(reference, openmm_integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.applyConstraints(1e-10)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    context.applyVelocityConstraints(1e-10)

    def snapshot():
        state = context.getState(getPositions=True, getVelocities=True)
        return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))

    x0, v0 = snapshot()
    openmm_integrator.step(n_steps)
    x_end, v_end = snapshot()
    system = amber14().create_system((topology, x0), nonbonded_method="CutoffPeriodic", nonbonded_cutoff=0.9,
                                     rigid_water=True, switch_distance=0.8, remove_cm_motion=False, velocities=v0)
    run = md.simulate(system, integrator, n_steps, key=jax.random.PRNGKey(0))
    return (float(np.abs(np.asarray(run.state.coords) - x_end).max()),
            float(np.abs(np.asarray(run.state.velocities) - v_end).max()))


def test_rigid_water_trajectory_follows_openmm():
    """20 steps of LangevinMiddle without friction (deterministic) from the same start: positions
    within 1e-6 nm of OpenMM's Reference platform (SETTLE, tolerance 1e-10), velocities 1e-3 nm/ps."""
    dx, dv = follows_openmm(openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0.0, 0.002 * unit.picosecond),
                            md.LangevinMiddle(0.002, 300.0, 0.0))
    assert dx < 1e-6 and dv < 1e-3, (dx, dv)


def nve_water(dt, n_steps):
    """(total energies every 10 steps, mean kinetic energy, atoms, final violation) of rigid TIP3P
    water (switched cutoff, reaction field, float64) under constrained velocity Verlet."""
    topology, positions = water_box()
    system = amber14().create_system((topology, positions), nonbonded_method="CutoffPeriodic", nonbonded_cutoff=0.9,
                                     rigid_water=True, switch_distance=0.8)
    velocities = md.random_velocities(jax.random.PRNGKey(3), system.atoms.mass, 300.0, dtype=jnp.float64)
    system = eqx.tree_at(lambda s: (s.velocities, s.loggers), system,
                         (velocities, {"e": md.TotalEnergyLogger(10), "ke": md.KineticEnergyLogger(10)}),
                         is_leaf=lambda x: x is None)
    run = md.simulate(system, md.VelocityVerlet(dt), n_steps)
    violation = float(system.constraints.violation(run.state.coords, system.boundary))
    return np.asarray(run.logs["e"]), float(np.mean(run.logs["ke"])), system.n_atoms, violation


def test_constrained_nve_conserves_energy():
    """1 ps at 1 fs: the total energy fluctuates by less than 0.05 % of the kinetic energy
    (measured 0.018 %; OpenMM's CPU platform, same system: 0.008 %), constraints held to 1e-12."""
    energy, kinetic, _, violation = nve_water(0.001, 1000)
    assert energy.std() < 5e-4 * kinetic, (energy.std(), kinetic)
    assert violation < 1e-12


@pytest.mark.slow  # ~30 s
def test_constrained_nve_drift():
    """10 ps at 2 fs: the drift of the total energy is below 1 kJ/mol per atom per ns (measured
    −0.12 with PME and 0.21 with reaction field at 1 fs; OpenMM's CPU platform on the same
    systems: 0.04 and −0.26) and the fluctuation below 0.1 % of the kinetic energy."""
    energy, kinetic, n_atoms, violation = nve_water(0.002, 5000)
    drift = np.polyfit(np.arange(len(energy)) * 0.02, energy, 1)[0] * 1000 / n_atoms
    assert abs(drift) < 1.0, drift
    assert energy.std() < 1e-3 * kinetic, (energy.std(), kinetic)
    assert violation < 1e-12


def rigid_triatomics(n_side=3, spacing=0.5, seed=0):
    """n_side³ free rigid water-shaped molecules (no forces): 6 degrees of freedom each."""
    rng = np.random.default_rng(seed)
    geometry = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [-0.024, 0.0927, 0.0]])
    coords, pairs = [], []
    for k, corner in enumerate(np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        coords.append(corner * spacing + geometry @ q.T)
        pairs += [(3 * k, 3 * k + 1), (3 * k, 3 * k + 2), (3 * k + 1, 3 * k + 2)]
    coords = np.concatenate(coords)
    pairs = np.array(pairs)
    distances = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=-1)
    n = len(coords)
    masses = np.tile([15.999, 1.008, 1.008], n // 3)
    return md.System(atoms=md.Atoms(mass=jnp.asarray(masses)), coords=jnp.asarray(coords),
                     velocities=md.random_velocities(jax.random.PRNGKey(seed), jnp.asarray(masses), 100.0,
                                                     dtype=jnp.float64),
                     boundary=md.CubicBoundary(n_side * spacing), constraints=md.DistanceConstraints(pairs, distances),
                     loggers={"ke": md.KineticEnergyLogger(5), "t": md.TemperatureLogger(5)})


def test_langevin_with_constraints_samples_the_canonical_kinetic_energy():
    """Free rigid molecules under LangevinMiddle: mean KE = (3N − M)/2 k_B T and its variance
    (3N − M)/2 (k_B T)², within 4 standard errors of block averages; the temperature logger,
    which divides by the same degrees of freedom, averages T."""
    temperature = 300.0
    system = rigid_triatomics()
    run = md.simulate(system, md.LangevinMiddle(0.001, temperature, 5.0), 60_000, key=jax.random.PRNGKey(2))
    ke = np.asarray(run.logs["ke"])[200:]
    dof, kt = system.degrees_of_freedom, KB * temperature
    assert dof == 6 * system.n_atoms // 3
    mean, mean_err = block_stats(ke)
    assert abs(mean - dof / 2 * kt) < 4 * mean_err, (mean, dof / 2 * kt, mean_err)
    var, var_err = block_stats((ke - ke.mean()) ** 2)
    assert abs(var - dof / 2 * kt**2) < 4 * var_err, (var, dof / 2 * kt**2, var_err)
    assert mean_err < 0.01 * mean
    t_mean, t_err = block_stats(np.asarray(run.logs["t"])[200:])
    assert abs(t_mean - temperature) < 4 * t_err


@pytest.mark.slow  # ~10 s; the default suite differentiates through the CCMA chain
def test_gradient_through_constraints_of_small_molecules():
    """Free rigid molecules: d(loss)/d(constraint distances)
    through 30 steps of LangevinMiddle (noise fixed) against central differences, 1e-6."""
    system = rigid_triatomics(n_side=2)
    integrator = md.LangevinMiddle(0.002, 300.0, 1.0)

    def loss(distances):
        live = eqx.tree_at(lambda s: s.constraints.distances, system, distances)
        x = md.simulate(live, integrator, 30, key=jax.random.PRNGKey(4)).state.coords
        return jnp.sum(x[1::3, 0] * x[2::3, 1]) + jnp.sum(x[::3] ** 2)

    distances = system.constraints.distances
    grad = jax.jit(jax.grad(loss))(distances)
    value = jax.jit(loss)
    for entry in (0, 2, 7):
        h = 1e-5
        fd = (float(value(distances.at[entry].add(h))) - float(value(distances.at[entry].add(-h)))) / (2 * h)
        assert float(grad[entry]) == pytest.approx(fd, rel=1e-6), entry


@pytest.mark.slow  # ~20 s each
@pytest.mark.parametrize("integrator", [md.VelocityVerlet(0.001), md.LangevinMiddle(0.001, 300.0, 1.0)],
                         ids=["verlet", "langevin"])
def test_gradient_through_a_constrained_run(integrator):
    """d(loss)/dθ through 40 steps of the capped peptide with its bonds to hydrogen constrained,
    for a torsion k, a template charge and a constraint distance, against central differences
    (float64, 1e-5; Langevin with its noise fixed by the key)."""
    topology, positions = alanine_dipeptide()
    velocities = np.random.default_rng(1).normal(0.0, 0.5, (topology.getNumAtoms(), 3))
    system = amber14().create_system((topology, positions), constraints="HBonds", remove_cm_motion=False,
                                     velocities=velocities)
    reference_coords = system.coords

    def loss(params, distances):
        live = eqx.tree_at(lambda s: s.constraints.distances, system.with_parameters(params), distances)
        run = md.simulate(live, integrator, 40, key=jax.random.PRNGKey(5))
        return jnp.sum((run.state.coords - reference_coords) ** 2)

    params, distances = system.force_field.parameters, system.constraints.distances
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, distances)
    value = jax.jit(loss)
    labels = amber14().labels
    cases = [("PeriodicTorsionForce", "k", int(np.argmax(np.abs(np.asarray(grads[0]["PeriodicTorsionForce"]["k"]))))),
             ("Residues", "charge", labels["Residues"].index("ALA:CA")),
             ("distance", None, int(np.argmax(np.abs(np.asarray(grads[1])))))]
    for section, field, entry in cases:
        if section == "distance":
            x, grad = float(distances[entry]), float(grads[1][entry])

            def at(v, entry=entry):
                return float(value(params, distances.at[entry].set(v)))
        else:
            x, grad = float(params[section][field][entry]), float(grads[0][section][field][entry])

            def at(v, section=section, field=field, entry=entry):
                p = dict(params)
                p[section] = dict(p[section])
                p[section][field] = p[section][field].at[entry].set(v)
                return float(value(p, distances))

        h = 1e-4 * max(abs(x), 1e-2)
        fd = (8 * (at(x + h) - at(x - h)) - (at(x + 2 * h) - at(x - 2 * h))) / (12 * h)
        assert grad != 0.0
        assert grad == pytest.approx(fd, rel=1e-5), (section, field)


def test_a_long_chain_is_projected_by_ccmas_iteration():
    """A 3-D chain of 101 atoms (100 coupled bond constraints, beyond the dense Newton solve):
    from 0.005 nm random displacements, positions are put back on the constraints to 1e-10
    relative and velocities lose their components along the bonds (float64)."""
    rng = np.random.default_rng(4)
    steps = rng.normal(size=(100, 3))
    steps = 0.15 * steps / np.linalg.norm(steps, axis=1, keepdims=True)
    x0 = np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
    pairs = np.stack([np.arange(100), np.arange(1, 101)], axis=1)
    masses = rng.uniform(1.0, 16.0, 101)
    constraints = md.DistanceConstraints(pairs, np.full(100, 0.15), masses=masses, geometry=x0)
    assert len(constraints.large_clusters) == 1 and not constraints.clusters
    boundary, inv_mass = md.NoBoundary(), jnp.asarray(1.0 / masses)[:, None]
    moved = jnp.asarray(x0 + rng.normal(0.0, 0.005, x0.shape))
    x = constraints.positions(moved, jnp.asarray(x0), inv_mass, boundary)
    assert float(constraints.violation(x, boundary)) < 1e-10
    assert float(constraints.violation(moved, boundary)) > 1e-2
    v = constraints.velocities(x, jnp.asarray(rng.normal(size=x0.shape)), inv_mass, boundary)
    r, dv = x[pairs[:, 0]] - x[pairs[:, 1]], v[pairs[:, 0]] - v[pairs[:, 1]]
    assert float(jnp.max(jnp.abs(jnp.sum(r * dv, axis=-1)))) < 1e-10
    # Differentiable in the distances (the iteration is unrolled): against central differences.
    weights = jnp.asarray(rng.normal(size=x0.shape))

    def loss(d):
        c = eqx.tree_at(lambda c: c.distances, constraints, d)
        return jnp.sum(weights * c.positions(moved, jnp.asarray(x0), inv_mass, boundary))

    d = jnp.full(100, 0.15)
    tangent = jnp.asarray(rng.normal(size=100))
    h = 1e-6
    fd = (float(loss(d + h * tangent)) - float(loss(d - h * tangent))) / (2 * h)
    assert float(jnp.vdot(jax.grad(loss)(d), tangent)) == pytest.approx(fd, rel=1e-6)


@pytest.mark.slow  # ~13 s
def test_all_bonds_of_a_protein_follow_openmm():
    """AllBonds on villin (589 coupled constraints in one cluster, CCMA's iteration): 20 steps of
    leapfrog Verlet from OpenMM's start on the constraints follow OpenMM's Reference platform
    (CCMA, tolerance 1e-10) to 1e-6 nm; positions hold the constraints to 1e-10 relative
    (float64) and 1e-5 (float32), velocities have no component along any bond (1e-10 / 1e-5
    relative) after a RATTLE projection."""
    from test_openmm_systems import villin_in_vacuum

    topology, positions = villin_in_vacuum()
    reference = app.ForceField("amber14-all.xml").createSystem(topology, constraints=app.AllBonds,
                                                               removeCMMotion=False)
    integrator = openmm.VerletIntegrator(0.002 * unit.picosecond)
    integrator.setConstraintTolerance(1e-10)
    context = openmm.Context(reference, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.applyConstraints(1e-10)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    context.applyVelocityConstraints(1e-10)
    start = context.getState(getPositions=True, getVelocities=True)
    x0 = start.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v0 = start.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    integrator.step(20)
    x_end = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    for dtype, bound in (("float64", 1e-10), ("float32", 1e-5)):
        system = md.ForceField("amber14-all.xml").create_system((topology, x0), constraints="AllBonds",
                                                                remove_cm_motion=False, velocities=v0, dtype=dtype)
        assert [len(c.index.array) for c in system.constraints.large_clusters] == [589]
        run = md.simulate(system, md.LeapfrogVerlet(0.002), 20)
        x = run.state.coords
        assert float(system.constraints.violation(x, system.boundary)) < bound
        if dtype == "float64":
            assert np.abs(np.asarray(x) - x_end).max() < 1e-6
        inv_mass = (1.0 / system.atoms.mass)[:, None]
        v = system.constraints.velocities(x, run.state.velocities + 0.1, inv_mass, system.boundary)
        pairs = system.constraints.pairs.array
        r, dv = x[pairs[:, 0]] - x[pairs[:, 1]], v[pairs[:, 0]] - v[pairs[:, 1]]
        along = jnp.abs(jnp.sum(r * dv, axis=-1)) / jnp.linalg.norm(r, axis=-1) / jnp.max(jnp.linalg.norm(dv, axis=-1))
        assert float(jnp.max(along)) < bound


def test_clear_errors():
    with pytest.raises(ValueError, match="constrained twice"):
        md.DistanceConstraints([[0, 1], [1, 0]], [0.1, 0.1])
    with pytest.raises(ValueError, match="positive and finite"):
        md.DistanceConstraints([[0, 1]], [0.0])
    with pytest.raises(ValueError, match="2 pairs but distances"):
        md.DistanceConstraints([[0, 1], [1, 2]], [0.1])
    with pytest.raises(ValueError, match="AllBonds"):
        chain = np.stack([np.arange(100), np.arange(1, 101)], axis=1)
        md.DistanceConstraints(chain, np.full(100, 0.15))


def test_hydrogen_mass_repartitioning_as_openmm():
    """create_system(hydrogen_mass=3 amu) moves mass from each heavy atom to its hydrogens as
    OpenMM does (the total unchanged), with the constraints that make a 4 fs step usable."""
    topology, positions = alanine_dipeptide()
    reference = app.ForceField(*FILES).createSystem(topology, constraints=app.HBonds, hydrogenMass=3 * unit.amu)
    expected = np.array([reference.getParticleMass(i).value_in_unit(unit.dalton)
                         for i in range(reference.getNumParticles())])
    system = amber14().create_system((topology, positions), constraints="HBonds", hydrogen_mass=3.0)
    masses = np.asarray(system.atoms.mass)
    np.testing.assert_allclose(masses, expected, rtol=1e-12)
    hydrogens = [a.index for a in topology.atoms() if a.element.symbol == "H"]
    assert np.all(masses[hydrogens] == 3.0)
    plain = amber14().create_system((topology, positions), constraints="HBonds")
    assert masses.sum() == pytest.approx(float(np.sum(plain.atoms.mass)), rel=1e-12)
