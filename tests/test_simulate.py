"""The engine end to end: NVE energy conservation, couplings, loggers, starting conditions,
float32/float64 runs and vmap over replicas."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md

R = md.REDUCED_UNITS


def lattice(n_side, spacing, n_dims):
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * n_dims, indexing="ij"), -1).reshape(-1, n_dims)
    return (grid + 0.5) * spacing


def lj_system(coords, velocities, box, rc=2.5, finder=None, loggers=None, dtype=None):
    n = coords.shape[0]
    if finder is None:
        finder = md.DistanceNeighborFinder(rc + 0.3)
    return md.System(
        atoms=md.Atoms.uniform(n, mass=1.0, sigma=1.0, epsilon=1.0, dtype=dtype),
        coords=coords,
        velocities=velocities,
        boundary=box,
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(rc)),),
        neighbor_finder=finder,
        loggers=loggers,
        units=R,
    )


def ideal_gas(n, n_dims, temperature, seed=0, mass=None, loggers=None):
    """Non-interacting atoms: couplings can be checked against closed forms."""
    key_x, key_v, key_m = jax.random.split(jax.random.PRNGKey(seed), 3)
    masses = jnp.ones(n) if mass is None else jax.random.uniform(key_m, (n,), minval=1.0, maxval=5.0)
    box = md.CubicBoundary(10.0, n_dims=n_dims)
    coords = jax.random.uniform(key_x, (n, n_dims), maxval=10.0)
    velocities = md.random_velocities(key_v, masses, temperature, R, n_dims=n_dims)
    return md.System(atoms=md.Atoms(masses), coords=coords, velocities=velocities, boundary=box,
                     loggers=loggers, units=R)


def temperature_of(system, velocities=None):
    v = system.velocities if velocities is None else velocities
    return float(md.temperature(system.atoms.mass, v, system.units.boltzmann))


# ---- NVE -------------------------------------------------------------------------------

N_NVE = 64
NVE_COORDS = jnp.asarray(lattice(4, 1.25, 3))  # simple cubic, ρ = 0.512 (melts at T = 1)
NVE_BOX = md.CubicBoundary(5.0)
NVE_VEL = md.random_velocities(jax.random.PRNGKey(1), jnp.ones(N_NVE), 1.0, R, remove_drift=True)
# Bound on max_t |E(t) − E(0)| / N at dt = 0.005 over 400 steps (2 τ). Velocity Verlet conserves
# a shadow Hamiltonian within O(dt²) of E, so the deviation is C·dt² without secular growth;
# for this LJ liquid C ≈ 40 (measured 1.1e-3 at dt = 0.005, 2.5e-4 at 0.0025, 5.7e-3 at 0.01).
# The bound allows C = 80; an O(dt) error (e.g. a force lagging by a step) gives ~5e-2.
NVE_BOUND = 80 * 0.005**2


def test_nve_energy_conservation():
    system = lj_system(NVE_COORDS, NVE_VEL, NVE_BOX, finder=md.DistanceNeighborFinder(2.5),
                       loggers={"E": md.TotalEnergyLogger(1), "K": md.KineticEnergyLogger(1)})
    e0 = float(md.potential_energy(system) + md.kinetic_energy(system.atoms.mass, NVE_VEL))
    deviation = {}
    for dt in (0.005, 0.0025):
        traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(dt)), 400)
        energy = np.asarray(traj.logs["E"])
        assert energy.shape == (400,)
        deviation[dt] = np.max(np.abs(energy - e0)) / N_NVE
        # it is a real liquid run: kinetic energy fluctuates far more than the total
        k = np.asarray(traj.logs["K"]) / N_NVE
        assert k.max() - k.min() > 50 * deviation[dt]
    assert deviation[0.005] < NVE_BOUND, deviation
    assert deviation[0.0025] < NVE_BOUND / 4, deviation
    # second-order integrator: halving dt divides the energy error by ~4 (2 for first order)
    assert 2.8 < deviation[0.005] / deviation[0.0025] < 6.5, deviation


# ---- couplings (closed forms on an ideal gas) -------------------------------------------


def test_berendsen_relaxes_temperature_exactly():
    """No forces: λ² = 1 + dt/τ (T0/T − 1) gives T_n = T0 + (1 − dt/τ)^n (T_start − T0)."""
    system = ideal_gas(200, 3, 1.0, loggers={"T": md.TemperatureLogger(1)})
    t_start = temperature_of(system)
    dt, tau = 0.005, 0.05
    n = np.arange(1, 31)
    for target in (2.5, 0.3):  # heating and cooling, same compiled run
        coupling = md.BerendsenThermostat(jnp.asarray(target), jnp.asarray(tau))
        traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(dt), coupling=coupling), 30)
        expected = target + (1 - dt / tau) ** n * (t_start - target)
        np.testing.assert_allclose(traj.logs["T"], expected, rtol=1e-10)
        # and the direction of every velocity is kept (a uniform rescale)
        cos = jnp.sum(traj.velocities * system.velocities) / (
            jnp.linalg.norm(traj.velocities) * jnp.linalg.norm(system.velocities))
        assert float(cos) == pytest.approx(1.0, abs=1e-12)


def test_berendsen_moves_lj_fluid_toward_target():
    coords = jnp.asarray(lattice(5, 1.3, 2))
    box = md.CubicBoundary(6.5, n_dims=2)
    vel = md.random_velocities(jax.random.PRNGKey(3), jnp.ones(25), 0.2, R, n_dims=2, remove_drift=True)
    system = lj_system(coords, vel, box, loggers={"T": md.TemperatureLogger(10)})
    coupling = md.BerendsenThermostat(2.0, 0.05)
    traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(0.005), coupling=coupling), 200)
    t = np.asarray(traj.logs["T"])
    assert temperature_of(system) < 0.5
    assert abs(np.mean(t[-5:]) - 2.0) < 0.15, t


def test_friction_multiplies_velocities_by_gamma():
    """No forces: v_n = γⁿ v0 and x_n = x0 + dt v0 (1 + γ + … + γ^(n−1))."""
    system = ideal_gas(50, 2, 1.0, loggers={"v": md.VelocitiesLogger(1)})
    gamma, dt, n = 0.9, 0.01, 12
    traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(dt), coupling=md.FrictionThermostat(jnp.asarray(gamma))), n)
    v0, x0 = np.asarray(system.velocities), np.asarray(system.coords)
    for k in range(1, n + 1):
        np.testing.assert_allclose(traj.logs["v"][k - 1], gamma**k * v0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(traj.coords, x0 + dt * v0 * sum(gamma**k for k in range(n)), rtol=1e-12)


def test_couplings_compose_in_order():
    system = ideal_gas(100, 3, 1.0, seed=4, mass=True)
    dt, tau, target = 0.01, 0.1, 2.0
    v0, t0 = system.velocities, temperature_of(system)
    friction = md.FrictionThermostat(jnp.asarray(0.5))
    berendsen = md.BerendsenThermostat(jnp.asarray(target), jnp.asarray(tau))

    def one_step(coupling):
        return md.simulate(system, md.VelocityVerlet(jnp.asarray(dt), coupling=coupling), 1).velocities

    # order matters: friction then Berendsen vs Berendsen then friction (a list works as a tuple)
    fb = temperature_of(system, one_step([friction, berendsen]))
    bf = temperature_of(system, one_step((berendsen, friction)))
    assert fb == pytest.approx(0.25 * t0 + dt / tau * (target - 0.25 * t0), rel=1e-10)
    assert bf == pytest.approx(0.25 * (t0 + dt / tau * (target - t0)), rel=1e-10)
    assert abs(fb - bf) > 0.01


def test_andersen_needs_key_and_randomises():
    n = 1000
    system = ideal_gas(n, 3, 0.5, seed=5)
    target = 3.0
    every_step = md.VelocityVerlet(jnp.asarray(0.01), coupling=md.AndersenThermostat(jnp.asarray(target), jnp.asarray(100.0)))
    with pytest.raises(ValueError, match="key"):
        md.simulate(system, every_step, 1)
    key = jax.random.PRNGKey(42)
    a = md.simulate(system, every_step, 1, key=key)
    b = md.simulate(system, every_step, 1, key=key)
    c = md.simulate(system, every_step, 1, key=jax.random.PRNGKey(43))
    np.testing.assert_array_equal(a.velocities, b.velocities)  # reproducible
    assert not np.allclose(a.velocities, c.velocities)  # key-dependent
    assert not np.array_equal(np.asarray(a.state.key), np.asarray(key))  # the key was consumed
    # ν·dt = 1: every velocity is redrawn at the target temperature, uncorrelated with v0
    assert temperature_of(system, a.velocities) == pytest.approx(target, rel=0.06)
    corr = np.corrcoef(np.asarray(a.velocities).ravel(), np.asarray(system.velocities).ravel())[0, 1]
    assert abs(corr) < 0.1
    # ν·dt = 0.2: about 20 % of the atoms are hit per step, the others keep their velocity
    partial = md.VelocityVerlet(jnp.asarray(0.01), coupling=md.AndersenThermostat(jnp.asarray(target), jnp.asarray(20.0)))
    v1 = np.asarray(md.simulate(system, partial, 1, key=key).velocities)
    changed = np.any(v1 != np.asarray(system.velocities), axis=1)
    assert 0.14 < changed.mean() < 0.26, changed.mean()
    # with ν = 0 nothing changes
    off = md.VelocityVerlet(jnp.asarray(0.01), coupling=md.AndersenThermostat(jnp.asarray(target), jnp.asarray(0.0)))
    np.testing.assert_array_equal(md.simulate(system, off, 1, key=key).velocities, system.velocities)


def test_typed_keys_work_eagerly_and_under_jit():
    """`jax.random.key` (typed) and `jax.random.PRNGKey` (raw) give the same run, eagerly and
    under jit (the traced checks carry every leaf but the key)."""
    system = ideal_gas(50, 3, 0.5, seed=5)
    integrator = md.VelocityVerlet(jnp.asarray(0.01), coupling=md.AndersenThermostat(jnp.asarray(3.0), jnp.asarray(20.0)))
    raw = md.simulate(system, integrator, 3, key=jax.random.PRNGKey(7)).velocities
    typed = md.simulate(system, integrator, 3, key=jax.random.wrap_key_data(jax.random.PRNGKey(7)))
    assert jax.dtypes.issubdtype(typed.state.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(typed.velocities, raw)
    jitted = jax.jit(lambda k: md.simulate(system, integrator, 3, key=k).velocities)
    np.testing.assert_array_equal(jitted(jax.random.wrap_key_data(jax.random.PRNGKey(7))), raw)


# ---- loggers -------------------------------------------------------------------------------

LOG_COORDS = jnp.asarray(lattice(4, 1.5, 2))
LOG_BOX = md.CubicBoundary(6.0, n_dims=2)
LOG_VEL = md.random_velocities(jax.random.PRNGKey(6), jnp.ones(16), 1.0, R, n_dims=2)


def _step_logger(every):
    return md.ObservableLogger(lambda state, system: state.step, every=every)


def _all_loggers():
    return {
        "step2": _step_logger(2), "step3": _step_logger(3), "step5": _step_logger(5),
        "x1": md.CoordinatesLogger(1), "x3": md.CoordinatesLogger(3),
        "v1": md.VelocitiesLogger(1), "v2": md.VelocitiesLogger(2),
        "f5": md.ForcesLogger(5), "ke3": md.KineticEnergyLogger(3), "pe1": md.PotentialEnergyLogger(1),
        "te2": md.TotalEnergyLogger(2), "t4": md.TemperatureLogger(4),
        "custom": md.ObservableLogger(
            lambda s, sys: {"com": jnp.mean(s.coords, axis=0), "msd": jnp.mean(jnp.sum((s.coords - sys.coords) ** 2, -1))},
            every=5),
    }


def test_loggers_record_at_multiples_of_every():
    system = lj_system(LOG_COORDS, LOG_VEL, LOG_BOX, loggers=_all_loggers())
    n_steps = 17  # a multiple of none of 2, 3, 4, 5
    traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(0.005)), n_steps)
    logs = traj.logs
    for every in (2, 3, 5):
        np.testing.assert_array_equal(logs[f"step{every}"], np.arange(every, n_steps + 1, every))
    counts = {"x1": 17, "x3": 5, "v1": 17, "v2": 8, "f5": 3, "ke3": 5, "pe1": 17, "te2": 8, "t4": 4}
    for name, count in counts.items():
        assert logs[name].shape[0] == count, name
    assert logs["custom"]["com"].shape == (3, 2) and logs["custom"]["msd"].shape == (3,)
    x1, v1 = np.asarray(logs["x1"]), np.asarray(logs["v1"])  # x1[k] is after step k + 1
    np.testing.assert_array_equal(x1[-1], traj.coords)  # every = 1 divides n_steps
    np.testing.assert_array_equal(logs["x3"], x1[2::3])  # steps 3, 6, …, 15
    assert not np.allclose(logs["x3"][-1], traj.coords)  # step 15 is not the end
    np.testing.assert_array_equal(logs["v2"], v1[1::2])
    mass = np.asarray(system.atoms.mass)[:, None]
    ke = 0.5 * np.sum(mass * v1**2, axis=(1, 2))
    np.testing.assert_allclose(logs["ke3"], ke[2::3], rtol=1e-12)
    np.testing.assert_allclose(logs["te2"], np.asarray(logs["pe1"])[1::2] + ke[1::2], rtol=1e-12)
    np.testing.assert_allclose(logs["t4"], 2 * ke[3::4] / (16 * 2), rtol=1e-12)
    forces = jax.jit(lambda x: md.forces(system, x))
    energy = jax.jit(lambda x: md.potential_energy(system, x))
    for k, step in enumerate((5, 10, 15)):
        np.testing.assert_allclose(logs["f5"][k], forces(x1[step - 1]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(logs["custom"]["com"][k], x1[step - 1].mean(0), rtol=1e-12)
        msd = np.mean(np.sum((x1[step - 1] - np.asarray(LOG_COORDS)) ** 2, -1))
        assert float(logs["custom"]["msd"][k]) == pytest.approx(msd, rel=1e-12)
    for step in (1, 9, 17):
        assert float(logs["pe1"][step - 1]) == pytest.approx(float(energy(x1[step - 1])), rel=1e-11)

    # n_steps a multiple of 3 (and 5): the last record of each is the final state
    few = {name: _all_loggers()[name] for name in ("step5", "x1", "x3", "f5", "t4")}
    traj15 = md.simulate(lj_system(LOG_COORDS, LOG_VEL, LOG_BOX, loggers=few), md.VelocityVerlet(jnp.asarray(0.005)), 15)
    np.testing.assert_array_equal(traj15.logs["x3"][-1], traj15.coords)
    np.testing.assert_array_equal(traj15.logs["x3"], np.asarray(traj15.logs["x1"])[2::3])
    np.testing.assert_allclose(traj15.logs["x1"], x1[:15], rtol=0, atol=1e-14)  # same trajectory
    np.testing.assert_array_equal(traj15.logs["step5"], [5, 10, 15])
    assert traj15.logs["f5"].shape[0] == 3 and traj15.logs["t4"].shape[0] == 3


def test_loggers_with_fewer_steps_than_every():
    loggers = {"x4": md.CoordinatesLogger(4), "x1": md.CoordinatesLogger(1), "e6": md.TotalEnergyLogger(6)}
    system = lj_system(LOG_COORDS, LOG_VEL, LOG_BOX, loggers=loggers)
    traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(0.005)), 3)
    assert traj.logs["x4"].shape == (0, 16, 2)
    assert traj.logs["e6"].shape == (0,)
    assert traj.logs["x1"].shape == (3, 16, 2)
    np.testing.assert_array_equal(traj.logs["x1"][-1], traj.coords)
    zero = md.simulate(system, md.VelocityVerlet(jnp.asarray(0.005)), 0)
    assert zero.logs["x1"].shape == (0, 16, 2)
    np.testing.assert_array_equal(zero.coords, LOG_COORDS)
    assert int(zero.state.step) == 0


# ---- starting conditions ---------------------------------------------------------------


@pytest.mark.parametrize("units, target", [(md.OPENMM_UNITS, 300.0), (md.REDUCED_UNITS, 1.5)])
@pytest.mark.parametrize("n_dims", [2, 3])
def test_random_velocities_temperature(units, target, n_dims):
    n = 20000
    key_m, key_v = jax.random.split(jax.random.PRNGKey(n_dims))
    masses = jax.random.uniform(key_m, (n,), minval=1.0, maxval=40.0)
    v = md.random_velocities(key_v, masses, target, units, n_dims=n_dims)
    assert v.shape == (n, n_dims) and v.dtype == jnp.float64
    t = float(md.temperature(masses, v, units.boltzmann))
    # relative standard deviation √(2/(N·D)) ≤ 0.7 %: 4 % is > 5σ
    assert t == pytest.approx(target, rel=0.04)
    # equipartition holds per mass: light and heavy atoms have the same ⟨m v²⟩
    mv2 = np.asarray(masses)[:, None] * np.asarray(v) ** 2 / units.boltzmann
    light, heavy = np.asarray(masses) < 10, np.asarray(masses) > 30
    assert mv2[light].mean() == pytest.approx(target, rel=0.06)
    assert mv2[heavy].mean() == pytest.approx(target, rel=0.06)

    drift_free = md.random_velocities(key_v, masses, target, units, n_dims=n_dims, remove_drift=True)
    momentum = np.sum(np.asarray(masses)[:, None] * np.asarray(drift_free), axis=0)
    scale = np.sum(np.asarray(masses)[:, None] * np.abs(np.asarray(drift_free)))
    assert np.all(np.abs(momentum) < 1e-12 * scale)
    assert float(md.temperature(masses, drift_free, units.boltzmann)) == pytest.approx(target, rel=0.04)
    f32 = md.random_velocities(key_v, masses, target, units, n_dims=n_dims, dtype=jnp.float32, remove_drift=True)
    assert f32.dtype == jnp.float32


def test_random_velocities_small_drift_removal_is_exact():
    masses = jnp.array([1.0, 2.0, 3.0, 50.0])
    v = md.random_velocities(jax.random.PRNGKey(0), masses, 2.0, R, remove_drift=True)
    np.testing.assert_allclose(jnp.sum(masses[:, None] * v, axis=0), 0.0, atol=1e-13)
    v_raw = md.random_velocities(jax.random.PRNGKey(0), masses, 2.0, R)
    assert np.max(np.abs(np.asarray(jnp.sum(masses[:, None] * v_raw, axis=0)))) > 1e-3


@pytest.mark.parametrize("n_dims, sides", [(2, [3.0, 2.0]), (3, [3.0, 3.0, 2.5])])
def test_random_coords_min_distance(n_dims, sides):
    boundary = md.RectangularBoundary(jnp.asarray(sides))
    min_distance = 0.7
    coords = md.random_coords(jax.random.PRNGKey(n_dims), 8 if n_dims == 2 else 30, boundary, min_distance=min_distance)
    c = np.asarray(coords)
    assert np.all(c >= 0) and np.all(c < np.asarray(sides))
    d = c[:, None] - c[None, :]
    d -= np.asarray(sides) * np.round(d / np.asarray(sides))  # minimum image
    r = np.sqrt(np.sum(d * d, -1)) + np.eye(len(c)) * 1e9
    assert r.min() >= min_distance
    # the same call without periodic images in mind would not guarantee this: check that some
    # pair is close only through the boundary, i.e. the image test was needed
    r_plain = np.sqrt(np.sum((c[:, None] - c[None, :]) ** 2, -1)) + np.eye(len(c)) * 1e9
    assert r_plain.min() >= r.min()
    with pytest.raises(ValueError, match="crowded"):
        md.random_coords(jax.random.PRNGKey(0), 60, boundary, min_distance=1.0, max_tries=200)


def test_random_coords_open_boundary():
    with pytest.raises(ValueError, match="box_size"):
        md.random_coords(0, 5, md.NoBoundary())
    c = np.asarray(md.random_coords(0, 20, md.NoBoundary(n_dims=2), min_distance=0.5, box_size=4.0))
    assert c.shape == (20, 2) and np.all((c >= 0) & (c < 4.0))
    r = np.sqrt(np.sum((c[:, None] - c[None, :]) ** 2, -1)) + np.eye(20) * 1e9
    assert r.min() >= 0.5


# ---- precision -------------------------------------------------------------------------


@pytest.mark.parametrize("n_dims", [2, 3])
def test_float32_matches_float64_and_stays_float32(n_dims):
    n_side = 4 if n_dims == 2 else 3
    spacing = 1.5
    coords = lattice(n_side, spacing, n_dims) + 0.05 * np.random.default_rng(0).normal(size=(n_side**n_dims, n_dims))
    n = coords.shape[0]
    side = n_side * spacing if n_dims == 2 else 5.0
    vel = np.asarray(md.random_velocities(jax.random.PRNGKey(7), jnp.ones(n), 1.0, R, n_dims=n_dims))
    loggers = {"x": md.CoordinatesLogger(5), "e": md.TotalEnergyLogger(5), "t": md.TemperatureLogger(5)}
    runs = {}
    for dtype in (jnp.float32, jnp.float64):
        box = md.CubicBoundary(jnp.asarray(side, dtype), n_dims=n_dims)
        rc = min(2.5, side / 2)
        system = lj_system(jnp.asarray(coords, dtype), jnp.asarray(vel, dtype), box, rc=rc,
                           finder=md.DistanceNeighborFinder(rc), loggers=loggers, dtype=dtype)
        runs[dtype] = md.simulate(system, md.VelocityVerlet(jnp.asarray(0.004, dtype)), 30)
    t32, t64 = runs[jnp.float32], runs[jnp.float64]
    for leaf in jax.tree_util.tree_leaves((t32.state, t32.logs)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32, leaf
    assert t32.coords.dtype == jnp.float32 and t64.coords.dtype == jnp.float64
    np.testing.assert_allclose(t32.coords, t64.coords, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(t32.velocities, t64.velocities, rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(t32.logs["e"], t64.logs["e"], rtol=1e-4, atol=1e-4 * n)
    np.testing.assert_allclose(t32.logs["t"], t64.logs["t"], rtol=1e-4)


def test_float32_coords_with_default_float64_atoms_stay_float32():
    """Only the coordinates are float32 (atoms, box and dt are float64): the state stays float32."""
    c = jnp.asarray(LOG_COORDS, jnp.float32)
    system = lj_system(c, jnp.asarray(LOG_VEL, jnp.float32), LOG_BOX, finder=md.NoNeighborFinder(),
                       loggers={"x": md.CoordinatesLogger(2)})
    assert system.atoms.mass.dtype == jnp.float64
    traj = md.simulate(system, md.VelocityVerlet(0.005, coupling=md.BerendsenThermostat(1.0, 0.1)), 4)
    for leaf in (traj.coords, traj.velocities, traj.state.forces, traj.state.potential_energy, traj.logs["x"]):
        assert leaf.dtype == jnp.float32


# ---- vmap over replicas --------------------------------------------------------------------


@pytest.mark.parametrize("finder", [md.NoNeighborFinder(), md.DistanceNeighborFinder(2.8, capacity=15)],
                         ids=["no-finder", "distance-finder"])
def test_vmap_over_replicas_equals_loop(finder):
    n_rep = 3
    keys = jax.random.split(jax.random.PRNGKey(8), n_rep)
    coords = jnp.stack([LOG_COORDS + 0.05 * jax.random.normal(k, LOG_COORDS.shape) for k in keys])
    vels = jnp.stack([md.random_velocities(k, jnp.ones(16), 1.0, R, n_dims=2) for k in keys])
    integrator = md.VelocityVerlet(jnp.asarray(0.005), coupling=md.BerendsenThermostat(1.0, 0.1))

    def run(c, v):
        system = lj_system(c, v, LOG_BOX, finder=finder, loggers={"e": md.PotentialEnergyLogger(5)})
        traj = md.simulate(system, integrator, 20)
        return traj.coords, traj.logs["e"]

    batched_coords, batched_e = jax.vmap(run)(coords, vels)
    assert batched_coords.shape == (n_rep, 16, 2) and batched_e.shape == (n_rep, 4)
    for r in range(n_rep):
        c, e = run(coords[r], vels[r])
        np.testing.assert_allclose(batched_coords[r], c, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched_e[r], e, rtol=1e-12)
    assert not np.allclose(batched_coords[0], batched_coords[1])
    if isinstance(finder, md.NoNeighborFinder):
        # under an outer jit that closes over everything (nothing in the arguments is traced)
        jitted = jax.jit(lambda: run(coords[0], vels[0]))()
        np.testing.assert_allclose(jitted[0], batched_coords[0], rtol=1e-12, atol=1e-12)


def test_vmap_over_parameter_sets_values_and_gradients_equal_loop():
    """A batch of parameter sets (σ, ε) through simulate with a neighbor list: values and
    per-set gradients under vmap equal a Python loop over the sets."""
    vels = md.random_velocities(jax.random.PRNGKey(3), jnp.ones(16), 1.0, R, n_dims=2)
    base = lj_system(LOG_COORDS, vels, LOG_BOX, finder=md.DistanceNeighborFinder(2.8, capacity=15))
    integrator = md.VelocityVerlet(0.005)

    def final_energy(params):
        sigma, epsilon = params
        atoms = md.Atoms.uniform(16, mass=1.0, sigma=sigma, epsilon=epsilon)
        return md.simulate(eqx.tree_at(lambda s: s.atoms, base, atoms), integrator, 30).state.potential_energy

    params = (jnp.array([0.9, 1.0, 1.1]), jnp.array([1.0, 0.8, 1.2]))
    values, grads = jax.vmap(jax.value_and_grad(final_energy))(params)
    for k in range(3):
        v, g = jax.value_and_grad(final_energy)((params[0][k], params[1][k]))
        np.testing.assert_allclose(values[k], v, rtol=1e-10)
        np.testing.assert_allclose([grads[0][k], grads[1][k]], g, rtol=1e-8)
    assert len(set(np.round(np.asarray(values), 6))) == 3


def test_box_built_inside_jit_and_its_gradient():
    """A System whose box is created from a traced side (jit, grad): the cutoff check is skipped
    rather than failing on the tracer, and dE/dL through the run matches finite differences."""
    def final_energy(side):
        box = md.CubicBoundary(side, n_dims=2)
        system = lj_system(LOG_COORDS, LOG_VEL, box, finder=md.NoNeighborFinder())
        return md.simulate(system, md.VelocityVerlet(jnp.asarray(0.005)), 10).state.potential_energy

    side = jnp.asarray(6.0)
    grad = float(jax.jit(jax.grad(final_energy))(side))
    h = 1e-5
    fd = (float(final_energy(side + h)) - float(final_energy(side - h))) / (2 * h)
    assert grad == pytest.approx(fd, rel=1e-6) and abs(grad) > 1e-3


# ---- traced inputs are checked inside the compiled run (issue point 7) -------------------------

TRACED_BAD = {  # (argument index, bad value, what the message must say)
    "zero-mass": (0, jnp.ones(16).at[3].set(0.0), r"mass must be positive"),
    "negative-mass": (0, jnp.ones(16).at[7].set(-1.0), r"mass must be positive"),
    "nan-sigma": (1, jnp.ones(16).at[5].set(jnp.nan), r"sigma contains NaN"),
    "small-box": (2, jnp.asarray(4.5), r"box side below twice the largest cutoff \(2\.5\)"),
}


def _run_from_traced(mass, sigma, side):
    """A System built from (possibly traced) masses, σ and box side: 16 LJ atoms in 2-D, rc = 2.5."""
    system = md.System(md.Atoms(mass, sigma=sigma, epsilon=jnp.ones(16)), LOG_COORDS, md.CubicBoundary(side, n_dims=2),
                       velocities=LOG_VEL, pairwise_inters=(md.LennardJones(cutoff=md.ShiftedForceCutoff(2.5)),),
                       units=R)
    return md.simulate(system, md.VelocityVerlet(0.005), 10).state.potential_energy


def _transformed(transform):
    if transform == "jit":
        return jax.jit(_run_from_traced)
    if transform == "grad":
        return jax.grad(_run_from_traced, argnums=(0, 1, 2))
    return lambda *args: jax.vmap(_run_from_traced)(*[jnp.stack([good, bad]) for good, bad in zip(TRACED_GOOD, args)])


TRACED_GOOD = (jnp.ones(16), jnp.ones(16), jnp.asarray(6.0))


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
def test_traced_good_inputs_run(transform):
    out = _transformed(transform)(*TRACED_GOOD)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(out))


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
@pytest.mark.parametrize("cause", list(TRACED_BAD))
def test_traced_bad_inputs_raise_errors_naming_the_cause(cause, transform):
    """Under jit, grad or vmap the System's values are tracers, so the eager checks cannot see
    them; the compiled run checks them before the first step (eqx.error_if) and names the
    cause: not the blow-up a zero mass or a NaN σ would otherwise cause."""
    index, bad, message = TRACED_BAD[cause]
    args = list(TRACED_GOOD)
    args[index] = bad
    with pytest.raises(Exception) as error:  # eqx.error_if: raised at run time, its type varies
        jax.block_until_ready(_transformed(transform)(*args))
    text = str(error.value)
    assert re.search(message, text), text
    assert "blew up" not in text and "time step" not in text


def test_traced_box_smaller_than_twice_the_list_cutoff_is_refused():
    """The largest cutoff includes the neighbor finder's: a box side of 5.4 holds the LJ cutoff
    (2.5) twice but not the list cutoff (2.8)."""
    def run(side):
        system = lj_system(LOG_COORDS, LOG_VEL, md.CubicBoundary(side, n_dims=2),
                           finder=md.DistanceNeighborFinder(2.8, capacity=15))
        return md.simulate(system, md.VelocityVerlet(0.005), 5).state.potential_energy

    assert np.isfinite(jax.jit(run)(6.0))
    with pytest.raises(Exception, match=r"box side below twice the largest cutoff \(2\.8\)"):
        jax.block_until_ready(jax.jit(run)(5.4))


# ---- integrators are pure updates; the driver does the rest (issue point 5) -------------------


class SymplecticEuler(md.Integrator):
    """A user's integrator in a few lines: v ← v + dt F(x)/m, then x ← x + dt v. Couplings,
    keys, blow-up tracking and neighbor-list updates are the driver's."""

    dt: float
    coupling: tuple = ()

    def update(self, x, v, current, forces, ctx):
        v = ctx.constraints.velocities(x, v + self.dt * current.forces * ctx.inv_mass, ctx.inv_mass, ctx.boundary)
        x = ctx.constraints.positions(x + self.dt * v, x, ctx.inv_mass, ctx.boundary)
        return x, v, forces(x)


def test_custom_integrator_runs_with_a_coupling_applied_by_the_driver():
    """Symplectic Euler plus FrictionThermostat(γ) through simulate (with a neighbor list) equals
    a hand-written loop v ← γ (v + dt F/m), x ← x + dt (v + dt F/m); the gradient with respect
    to γ through the run matches a central finite difference."""
    loggers = {"x": md.CoordinatesLogger(1), "v": md.VelocitiesLogger(1)}
    system = lj_system(LOG_COORDS, LOG_VEL, LOG_BOX, finder=md.DistanceNeighborFinder(2.8), loggers=loggers)
    dt, gamma, n = 0.005, 0.97, 12
    trajectory = md.simulate(system, SymplecticEuler(dt, (md.FrictionThermostat(gamma),)), n)
    forces = jax.jit(lambda x: md.forces(system, x))
    x, v = np.asarray(LOG_COORDS), np.asarray(LOG_VEL)
    for k in range(n):
        v_kick = v + dt * np.asarray(forces(x))  # unit masses
        x, v = x + dt * v_kick, gamma * v_kick
        np.testing.assert_allclose(trajectory.logs["x"][k], x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(trajectory.logs["v"][k], v, rtol=1e-10, atol=1e-12)
    assert int(trajectory.state.step) == n and int(trajectory.state.first_nonfinite_step) == -1
    vv = md.simulate(system, md.VelocityVerlet(dt, coupling=md.FrictionThermostat(gamma)), n)
    assert not np.allclose(vv.coords, trajectory.coords, rtol=0, atol=1e-9)  # really another integrator

    def kinetic(g):
        run = md.simulate(lj_system(LOG_COORDS, LOG_VEL, LOG_BOX, finder=md.DistanceNeighborFinder(2.8)),
                          SymplecticEuler(dt, (md.FrictionThermostat(g),)), n)
        return md.kinetic_energy(system.atoms.mass, run.velocities)

    h = 1e-6
    central = (float(kinetic(gamma + h)) - float(kinetic(gamma - h))) / (2 * h)
    np.testing.assert_allclose(jax.grad(kinetic)(gamma), central, rtol=1e-6)


def test_driver_reports_the_step_of_a_blow_up_of_a_custom_integrator():
    """An atom flung at 7.5e10 length units per step crosses |x| = 1e12 (a blow-up in open
    space) at step 14: the driver's tracking says so, eagerly and under jit."""
    coords = jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.0, (4, 2)))
    velocities = jnp.zeros((4, 2)).at[2, 0].set(7.5e10)
    system = md.System(md.Atoms(jnp.ones(4)), coords, md.NoBoundary(n_dims=2), velocities=velocities, units=R)
    integrator = SymplecticEuler(1.0, (md.FrictionThermostat(1.0),))
    quiet = md.simulate(system, integrator, 20, check=False)
    assert int(quiet.state.first_nonfinite_step) == 14 and int(quiet.state.step) == 20
    assert int(md.simulate(system, integrator, 13, check=False).state.first_nonfinite_step) == -1
    with pytest.raises(md.SimulationError, match=r"blew up.*at step 14\b"):
        md.simulate(system, integrator, 20)
    jitted = jax.jit(lambda v: md.simulate(eqx.tree_at(lambda s: s.velocities, system, v), integrator, 20, check=False))
    assert int(jitted(velocities).state.first_nonfinite_step) == 14
    with pytest.raises(Exception, match="blew up"):
        jax.block_until_ready(jax.jit(lambda v: md.simulate(eqx.tree_at(lambda s: s.velocities, system, v),
                                                            integrator, 20).coords)(velocities))


FIXED = np.array([1, 30])


def test_fixed_atoms_stay_still_and_nve_energy_is_conserved():
    """VelocityVerlet with FixedAtoms: the fixed atoms neither move nor get a velocity, the others
    move, the total energy is conserved to O(dt²) (the NVE bound; both runs last 2 τ) and the
    temperature counts N·D − 3F degrees of freedom."""
    velocities = NVE_VEL.at[FIXED].set(0.0)
    loggers = {"E": md.TotalEnergyLogger(1), "K": md.KineticEnergyLogger(1), "T": md.TemperatureLogger(10),
               "x": md.CoordinatesLogger(10), "v": md.VelocitiesLogger(10)}
    system = md.System(
        atoms=md.Atoms.uniform(N_NVE, mass=1.0, sigma=1.0, epsilon=1.0), coords=NVE_COORDS, velocities=velocities,
        boundary=NVE_BOX, pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(2.5)),),
        neighbor_finder=md.DistanceNeighborFinder(2.5), loggers=loggers, units=R, constraints=md.FixedAtoms(FIXED))
    assert system.degrees_of_freedom == N_NVE * 3 - 3 * len(FIXED)
    e0 = float(md.potential_energy(system) + md.kinetic_energy(system.atoms.mass, velocities))
    deviation = {}
    for dt, n_steps in ((0.005, 400), (0.0025, 800)):
        traj = md.simulate(system, md.VelocityVerlet(jnp.asarray(dt)), n_steps)
        x, v = np.asarray(traj.logs["x"]), np.asarray(traj.logs["v"])
        np.testing.assert_array_equal(x[:, FIXED], np.broadcast_to(np.asarray(NVE_COORDS)[FIXED], x[:, FIXED].shape))
        np.testing.assert_array_equal(v[:, FIXED], 0.0)
        free = np.setdiff1d(np.arange(N_NVE), FIXED)
        assert np.min(np.linalg.norm(x[-1, free] - np.asarray(NVE_COORDS)[free], axis=-1)) > 1e-3
        energy = np.asarray(traj.logs["E"])
        deviation[dt] = np.max(np.abs(energy - e0)) / N_NVE
        k = np.asarray(traj.logs["K"]) / N_NVE
        assert k.max() - k.min() > 50 * deviation[dt]
        ke = 0.5 * np.sum(v**2, axis=(1, 2))
        np.testing.assert_allclose(traj.logs["T"], 2 * ke / (3 * (N_NVE - len(FIXED))), rtol=1e-12)
    assert deviation[0.005] < NVE_BOUND, deviation
    assert deviation[0.0025] < NVE_BOUND / 4, deviation
    assert 2.8 < deviation[0.005] / deviation[0.0025] < 6.5, deviation


def test_temperature_logger_with_centre_of_mass_motion_removed():
    """remove_com_motion=True: the centre-of-mass velocity is zero after every step and the
    temperature is 2K/((N−1)·D·k_B) (OpenMM units, so k_B ≠ 1); without it the drift stays."""
    n, n_dims = 16, 2
    key_m, key_v = jax.random.split(jax.random.PRNGKey(11))
    masses = jax.random.uniform(key_m, (n,), minval=10.0, maxval=40.0)
    drift = jnp.array([0.4, -0.25])
    velocities = md.random_velocities(key_v, masses, 300.0, md.OPENMM_UNITS, n_dims=n_dims) + drift
    loggers = {"T": md.TemperatureLogger(1), "v": md.VelocitiesLogger(1)}

    def run(remove):
        system = md.System(
            md.Atoms(masses, sigma=jnp.full(n, 0.3), epsilon=jnp.full(n, 1.0)), 0.3 * LOG_COORDS,
            md.CubicBoundary(1.8, n_dims=2), velocities=velocities,
            pairwise_inters=(md.LennardJones(cutoff=md.ShiftedForceCutoff(0.8)),), loggers=loggers,
            remove_com_motion=remove)
        return system, md.simulate(system, md.VelocityVerlet(0.002), 20)

    system, traj = run(True)
    assert system.degrees_of_freedom == (n - 1) * n_dims
    m, v = np.asarray(masses)[:, None], np.asarray(traj.logs["v"])
    momentum = np.sum(m * v, axis=1)  # (steps, D)
    assert np.all(np.abs(momentum) < 1e-12 * np.sum(m * np.abs(v), axis=1))
    kinetic = 0.5 * np.sum(m * v**2, axis=(1, 2))
    expected = 2 * kinetic / ((n - 1) * n_dims * md.OPENMM_UNITS.boltzmann)
    np.testing.assert_allclose(traj.logs["T"], expected, rtol=1e-12)
    assert np.all(np.abs(np.asarray(traj.logs["T"]) - 300.0) < 200.0)  # a real temperature
    _, drifting = run(False)
    moving = np.sum(m * np.asarray(drifting.logs["v"]), axis=1)
    np.testing.assert_allclose(moving, np.broadcast_to(np.sum(m * np.asarray(velocities), axis=0), moving.shape),
                               rtol=1e-9)  # LJ conserves momentum: the drift is not removed by itself
    assert np.all(np.abs(moving) > 1.0)
