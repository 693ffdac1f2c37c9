"""Observables: values against independent computations, smooth RDF → histogram, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd import observables as obs

# The observables compiled once per shape (run eagerly, every operation would compile on its own).
rdf = jax.jit(obs.rdf)
rmsd = jax.jit(obs.rmsd, static_argnames="align")
pressure = jax.jit(obs.pressure)
drmsd, rmsf, radius_of_gyration, asphericity = map(jax.jit, (obs.drmsd, obs.rmsf, obs.radius_of_gyration,
                                                             obs.asphericity))


@pytest.fixture(scope="module")
def gas():
    boundary = md.CubicBoundary(3.0)
    coords = md.random_coords(jax.random.PRNGKey(3), 40, boundary, min_distance=0.3, dtype=jnp.float64)
    return coords, boundary


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_pair_distances_match_numpy(gas):
    coords, boundary = gas
    pairs = np.array([[0, 1], [2, 7], [5, 39]])
    x = np.asarray(coords)
    expected = []
    for i, j in pairs:
        d = x[j] - x[i]
        d -= 3.0 * np.round(d / 3.0)
        expected.append(np.linalg.norm(d))
    np.testing.assert_allclose(obs.pair_distances(coords, boundary, pairs), expected, rtol=1e-12)
    trajectory = jnp.stack([coords, coords + 0.1])
    assert obs.pair_distances(trajectory, boundary, pairs).shape == (2, 3)


def test_smooth_rdf_converges_to_histogram(gas):
    coords, boundary = gas
    frames = jnp.stack([coords, boundary.wrap(coords + 0.37)])
    n_bins, r_max = 20, 1.4
    centres, g_hist = obs.rdf_histogram(frames, boundary, r_max, n_bins)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    fine = np.linspace(1e-4, r_max, 4000)

    def binned(width):
        g = np.asarray(rdf(frames, boundary, fine, width))
        # integrate the smooth pair density over each bin, normalise like the histogram
        shell = 4.0 * np.pi * fine**2
        density = g * shell
        per_bin = np.array([np.trapezoid(density[(fine >= lo) & (fine < hi)], fine[(fine >= lo) & (fine < hi)])
                            for lo, hi in zip(edges[:-1], edges[1:])])
        return per_bin / (4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3))

    errors = [np.max(np.abs(binned(w) - np.asarray(g_hist))[2:]) for w in (0.05, 0.01, 0.001)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 * errors[0]


def test_rdf_gradient_matches_finite_differences(gas):
    coords, boundary = gas
    r = jnp.linspace(0.3, 1.2, 7)
    loss = jax.jit(lambda c: jnp.sum(obs.rdf(c, boundary, r, 0.1) ** 2))
    direction = jnp.asarray(np.random.default_rng(0).normal(size=coords.shape))
    h = 1e-6
    fd = (loss(coords + h * direction) - loss(coords - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(jax.jit(jax.grad(loss))(coords), direction), fd, rtol=1e-6)


def test_rmsd_kabsch():
    reference = jnp.asarray(np.random.default_rng(1).normal(size=(12, 3)))
    moved = reference @ _rotation(2).T + jnp.array([1.0, -2.0, 0.5])
    assert float(rmsd(moved, reference)) < 1e-10
    assert float(rmsd(moved, reference, align=False)) > 1.0
    noisy = moved + 0.1 * jnp.asarray(np.random.default_rng(3).normal(size=moved.shape))
    from scipy.spatial.transform import Rotation

    a = np.asarray(reference) - np.asarray(reference).mean(0)
    b = np.asarray(noisy) - np.asarray(noisy).mean(0)
    _, rssd = Rotation.align_vectors(a, b)
    np.testing.assert_allclose(rmsd(noisy, reference), rssd / np.sqrt(12), rtol=1e-8)
    grad = jax.jit(jax.grad(lambda c: obs.rmsd(c, reference)))(noisy)
    assert np.all(np.isfinite(grad))
    direction = jnp.asarray(np.random.default_rng(4).normal(size=noisy.shape))
    h = 1e-6
    fd = (rmsd(noisy + h * direction, reference) - rmsd(noisy - h * direction, reference)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-6)
    assert rmsd(jnp.stack([moved, noisy]), reference).shape == (2,)
    # a mirror image is not a rotation: Kabsch must not reflect
    mirrored = reference * jnp.array([1.0, 1.0, -1.0])
    assert float(rmsd(mirrored, reference)) > 0.1


def test_drmsd_rmsf_gyration():
    rng = np.random.default_rng(5)
    reference = jnp.asarray(rng.normal(size=(8, 3)))
    assert float(drmsd(reference @ _rotation(6).T + 3.0, reference)) < 1e-10
    other = reference + 0.2 * jnp.asarray(rng.normal(size=(8, 3)))
    dr = np.linalg.norm(np.asarray(other)[:, None] - np.asarray(other)[None], axis=-1)
    d0 = np.linalg.norm(np.asarray(reference)[:, None] - np.asarray(reference)[None], axis=-1)
    iu = np.triu_indices(8, 1)
    np.testing.assert_allclose(drmsd(other, reference), np.sqrt(np.mean((dr - d0)[iu] ** 2)), rtol=1e-12)
    trajectory = jnp.asarray(rng.normal(size=(30, 8, 3)))
    expected = np.sqrt(np.mean(np.sum((np.asarray(trajectory) - np.asarray(trajectory).mean(0)) ** 2, -1), 0))
    np.testing.assert_allclose(rmsf(trajectory), expected, rtol=1e-12)
    masses = jnp.asarray(rng.uniform(1, 3, 8))
    x, m = np.asarray(reference), np.asarray(masses)
    centre = (m[:, None] * x).sum(0) / m.sum()
    np.testing.assert_allclose(radius_of_gyration(reference, masses),
                               np.sqrt((m * ((x - centre) ** 2).sum(1)).sum() / m.sum()), rtol=1e-12)
    rod = jnp.stack([jnp.linspace(0, 10, 20), jnp.zeros(20), jnp.zeros(20)], axis=1)
    assert float(asphericity(rod)) == pytest.approx(1.0, abs=1e-9)
    cube = jnp.asarray(np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3))
    assert abs(float(asphericity(cube))) < 1e-9


def test_time_correlation_matches_numpy():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(25, 4, 3))
    b = rng.normal(size=(25, 4, 3))
    correlation = jax.jit(obs.time_correlation, static_argnames="max_lag")
    c = np.asarray(correlation(jnp.asarray(a), jnp.asarray(b), max_lag=6))
    for lag in range(7):
        expected = np.mean([np.sum(a[t] * b[t + lag]) for t in range(25 - lag)]) / 12
        assert c[lag] == pytest.approx(expected, rel=1e-12)
    vacf = jax.jit(obs.velocity_autocorrelation, static_argnames="max_lag")(jnp.asarray(a), max_lag=3)
    assert float(vacf[0]) == pytest.approx(1.0)


def test_pressure_ideal_gas_and_virial(gas):
    coords, boundary = gas
    n = coords.shape[0]
    velocities = md.random_velocities(jax.random.PRNGKey(0), jnp.ones(n), 2.0, md.REDUCED_UNITS, dtype=jnp.float64)
    ideal = md.System(md.Atoms(jnp.ones(n)), coords, boundary, velocities=velocities, units=md.REDUCED_UNITS)
    kinetic = float(md.kinetic_energy(jnp.ones(n), velocities))
    assert float(pressure(ideal)) == pytest.approx(2 * kinetic / (3 * 27.0), rel=1e-12)
    lj = md.LennardJones(cutoff=md.ShiftedForceCutoff(1.4))
    system = md.System(md.Atoms.uniform(n, mass=1.0, sigma=0.3, epsilon=1.0), coords, boundary,
                       velocities=velocities, pairwise_inters=[lj], units=md.REDUCED_UNITS)
    # explicit pair virial: W = −Σ r V'(r)
    x = np.asarray(coords)
    virial = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            d = x[j] - x[i]
            d -= 3.0 * np.round(d / 3.0)
            r = np.linalg.norm(d)
            if r < 1.4:
                dv = lambda rr: 4 * (-12 * 0.3**12 / rr**13 + 6 * 0.3**6 / rr**7)
                virial -= r * (dv(r) - dv(1.4))
    expected = (2 * kinetic + virial) / (3 * 27.0)
    assert float(pressure(system)) == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(float(jax.jit(jax.grad(lambda s: obs.pressure(
        md.System(md.Atoms.uniform(n, mass=1.0, sigma=s, epsilon=1.0), coords, boundary, velocities=velocities,
                  pairwise_inters=[lj], units=md.REDUCED_UNITS))))(0.3)))


def test_losses_combine_and_distance(gas):
    from diffmd import losses

    coords, boundary = gas
    pairs = np.array([[0, 1], [2, 3]])
    d = obs.pair_distances(coords, boundary, pairs)
    assert float(losses.distance_loss(coords, boundary, pairs, 0.5)) == pytest.approx(float(jnp.mean(jnp.abs(d - 0.5))))
    assert float(losses.combine({"a": 2.0, "b": 3.0}, {"a": 0.5})) == pytest.approx(4.0)
    with pytest.raises(KeyError, match="unknown loss terms"):
        losses.combine({"a": 1.0}, {"b": 1.0})
