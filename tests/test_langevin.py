"""`LangevinMiddle` (OpenMM's LangevinMiddleIntegrator): reproducible from the key, the
canonical kinetic-energy distribution (mean and variance within their statistical errors, from
block averages), and gradients with the noise held fixed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md

jax.config.update("jax_enable_x64", True)

MASS, SIGMA, EPSILON = 39.948, 0.34, 0.997  # argon: amu, nm, kJ/mol
KB = md.units.OPENMM_UNITS.boltzmann


def argon(n_side=4, density=18.0, temperature=120.0, interacting=True, seed=0, remove_com_motion=False):
    """n_side³ argon atoms on a jittered lattice at `density` atoms/nm³, Maxwell-Boltzmann
    velocities; no centre-of-mass removal (Langevin does not conserve momentum: 3N degrees of
    freedom)."""
    n = n_side**3
    side = (n / density) ** (1 / 3)
    grid = (np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * side / n_side
    coords = grid + np.random.default_rng(seed).normal(0.0, 0.01, grid.shape)
    masses = jnp.full((n,), MASS)
    velocities = md.random_velocities(jax.random.PRNGKey(seed), masses, temperature, dtype=jnp.float64)
    terms = (md.LennardJones(cutoff=md.ShiftedPotentialCutoff(0.55)),) if interacting else ()
    return md.System(atoms=md.Atoms.uniform(n, mass=MASS, sigma=SIGMA, epsilon=EPSILON, dtype=jnp.float64),
                     coords=jnp.asarray(coords), velocities=velocities, boundary=md.CubicBoundary(side),
                     pairwise_inters=terms, remove_com_motion=remove_com_motion,
                     loggers={"ke": md.KineticEnergyLogger(10)})


def block_stats(x, n_blocks=10):
    """(mean, its standard error) of a correlated series from the spread of block means."""
    blocks = np.array_split(np.asarray(x), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return means.mean(), means.std(ddof=1) / np.sqrt(n_blocks)


@pytest.mark.parametrize("interacting", [False, True])
def test_kinetic_energy_distribution_is_canonical(interacting):
    """Mean KE = (3N/2) k_B T and var KE = (3N/2) (k_B T)² (a sum of 3N quadratic terms), each
    within 4 standard errors estimated from 10 blocks (200 ps); free atoms and an LJ liquid at
    2 fs."""
    temperature = 120.0
    system = argon(interacting=interacting, temperature=60.0)  # starts away from T: it must get there
    integrator = md.LangevinMiddle(0.002, temperature, 5.0)
    run = md.simulate(system, integrator, 100_000, key=jax.random.PRNGKey(1))
    ke = np.asarray(run.logs["ke"])[300:]  # 0.6 ps of equilibration dropped (1/γ = 0.2 ps)
    kt, dof = KB * temperature, 3 * system.n_atoms
    mean, mean_err = block_stats(ke)
    assert abs(mean - dof / 2 * kt) < 4 * mean_err + 1e-12, (mean, dof / 2 * kt, mean_err)
    var, var_err = block_stats((ke - ke.mean()) ** 2)
    assert abs(var - dof / 2 * kt**2) < 4 * var_err, (var, dof / 2 * kt**2, var_err)
    assert mean_err < 0.005 * mean  # the test has power: a 2.5 % wrong temperature fails it (measured: 9σ and 10σ)


def test_reproducible_from_the_key_and_differentiable_with_the_noise_fixed():
    system = argon(n_side=3)
    integrator = md.LangevinMiddle(0.002, 120.0, 1.0)
    a = md.simulate(system, integrator, 20, key=jax.random.PRNGKey(3))
    b = md.simulate(system, integrator, 20, key=jax.random.PRNGKey(3))
    c = md.simulate(system, integrator, 20, key=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(a.coords, b.coords)
    assert not np.allclose(a.coords, c.coords)
    with pytest.raises(ValueError, match="key"):
        md.simulate(system, integrator, 1)

    def loss(temperature):
        run = md.simulate(system, md.LangevinMiddle(0.002, temperature, 1.0), 20, key=jax.random.PRNGKey(3))
        return jnp.sum(run.velocities**2)

    grad = float(jax.grad(loss)(120.0))
    h = 1e-2
    fd = (float(loss(120.0 + h)) - float(loss(120.0 - h))) / (2 * h)
    assert grad != 0.0 and grad == pytest.approx(fd, rel=1e-5)


def test_zero_friction_is_leapfrog_verlet():
    """γ = 0: no noise, and the half-step velocities of leapfrog: v ← v + dt F/m, x ← x + dt v."""
    system = argon(n_side=3)
    dt = 0.002
    run = md.simulate(system, md.LangevinMiddle(dt, 120.0, 0.0), 1, key=jax.random.PRNGKey(0))
    f0 = md.forces(system)
    v = system.velocities + dt * f0 / MASS
    np.testing.assert_allclose(run.velocities, v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.coords, system.coords + dt * v, rtol=1e-12, atol=1e-12)
