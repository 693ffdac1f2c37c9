"""CMAPTorsions and HarmonicImpropers against OpenMM's Reference platform (CMAPTorsionForce,
CHARMM's CustomTorsionForce improper), finite differences and map-gradient checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd.forces.cmap import _spline_derivative_matrix
from diffmd.space.geometry import term_dihedrals

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")

G = 12  # grid size of the random maps (small: OpenMM fits them once per context)
N_ATOMS = 10
IMPROPER_EXPRESSION = "k*min(dtheta, 2*pi-dtheta)^2; dtheta = abs(theta-theta0); pi = %.17g" % math.pi
# compiled once per System structure (called eagerly, each operation would compile on its own)
energy_and_forces = jax.jit(md.energy_and_forces)


def openmm_energy_forces(forces, coords):
    system = openmm.System()
    for _ in range(len(coords)):
        system.addParticle(1.0)
    for force in forces:
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(unit.Quantity([openmm.Vec3(*map(float, x)) for x in coords], unit.nanometer))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return energy, forces


def diffmd_system(term, coords):
    return md.System(md.Atoms(mass=np.ones(len(coords))), jnp.asarray(coords), md.NoBoundary(3), bonded_inters=[term])


def random_maps(rng, n_maps=2):
    # Smooth part plus noise, so the spline derivatives and cross terms are all non-trivial.
    angles = np.arange(G) * 2 * np.pi / G
    phi, psi = np.meshgrid(angles, angles, indexing="ij")
    maps = []
    for m in range(n_maps):
        a = rng.normal(size=4)
        smooth = (a[0] * np.cos(phi - 0.3 * m) + a[1] * np.sin(2 * psi) + a[2] * np.cos(phi + psi)
                  + a[3] * np.sin(phi - 2 * psi))
        maps.append(5.0 * smooth + rng.normal(size=(G, G)))
    return np.stack(maps)


def cmap_case(seed=0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0.0, 0.8, size=(N_ATOMS, 3))
    maps = random_maps(rng)
    rows = np.array([
        [0, 1, 2, 3, 1, 2, 3, 4],  # a backbone-like pair (5 consecutive atoms)
        [5, 6, 7, 8, 2, 9, 4, 0],  # two unrelated torsions
        [3, 4, 5, 6, 4, 5, 6, 7],
    ])
    map_index = np.array([0, 1, 1])
    return coords, maps, rows, map_index


def openmm_cmap(maps, rows, map_index):
    force = openmm.CMAPTorsionForce()
    for grid in maps:
        force.addMap(grid.shape[0], md.CMAPTorsions.map_to_openmm(grid))
    for m, row in zip(map_index, rows):
        force.addTorsion(int(m), *map(int, row))
    return force


def test_map_layout_follows_openmm():
    # OpenMM: energy[i + size*j] is the energy at first angle i*2pi/size, second angle j*2pi/size.
    size = 3
    flat = np.arange(9.0)
    grid = md.CMAPTorsions.map_from_openmm(size, flat)
    for i in range(size):
        for j in range(size):
            assert grid[i, j] == flat[i + size * j]
    assert md.CMAPTorsions.map_to_openmm(grid) == list(flat)


def openmm_periodic_spline_node_derivatives(y):
    """A line-by-line port of OpenMM's SplineFitter::createPeriodicSpline (Sherman-Morrison on
    the cyclic tridiagonal system) and evaluateSplineDerivative at the nodes, uniform grid."""
    size = len(y)
    x = np.arange(size + 1) * 2 * np.pi / size
    y = np.append(y, y[0])
    n = size + 1
    a, b, c, rhs = (np.zeros(n - 1) for _ in range(4))
    a[0], b[0], c[0] = x[n - 1] - x[n - 2], 2 * (x[1] - x[0] + x[n - 1] - x[n - 2]), x[1] - x[0]
    rhs[0] = 6 * ((y[1] - y[0]) / (x[1] - x[0]) - (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]))
    for i in range(1, n - 1):
        a[i], b[i], c[i] = x[i] - x[i - 1], 2 * (x[i + 1] - x[i - 1]), x[i + 1] - x[i]
        rhs[i] = 6 * ((y[i + 1] - y[i]) / (x[i + 1] - x[i]) - (y[i] - y[i - 1]) / (x[i] - x[i - 1]))
    beta, alpha, gamma = a[0], c[n - 2], -b[0]

    def tridiagonal(r):
        sol, g = np.zeros(len(r)), np.zeros(len(r))
        sol[0], bb = r[0] / b[0], b[0]
        for i in range(1, len(r)):
            g[i] = c[i - 1] / bb
            bb = b[i] - a[i] * g[i]
            sol[i] = (r[i] - a[i] * sol[i - 1]) / bb
        for i in range(len(r) - 2, -1, -1):
            sol[i] -= g[i + 1] * sol[i + 1]
        return sol

    m = n - 1
    b[0] -= gamma
    b[m - 1] -= alpha * beta / gamma
    deriv = tridiagonal(rhs)
    u = np.zeros(m)
    u[0], u[m - 1] = gamma, alpha
    z = tridiagonal(u)
    deriv = deriv - (deriv[0] + beta * deriv[m - 1] / gamma) / (1 + z[0] + beta * z[m - 1] / gamma) * z
    deriv = np.append(deriv, deriv[0])
    h = x[1] - x[0]  # derivative at the left end of each interval (a = 1, b = 0)
    return np.array([(y[j + 1] - y[j]) / h + (-2 * deriv[j] - deriv[j + 1]) * h / 6 for j in range(size)])


def test_spline_derivative_matrix_matches_openmm_spline_fitter():
    rng = np.random.default_rng(5)
    for size in (G, 24):
        d = _spline_derivative_matrix(size)
        y = rng.normal(size=size)
        np.testing.assert_allclose(d @ y, openmm_periodic_spline_node_derivatives(y), rtol=0, atol=1e-12)
    # Sanity: a constant has zero derivative; sin's node derivatives approach cos, O(h²).
    x = np.arange(48) * 2 * np.pi / 48
    np.testing.assert_allclose(_spline_derivative_matrix(48) @ np.ones(48), 0.0, atol=1e-12)
    np.testing.assert_allclose(_spline_derivative_matrix(48) @ np.sin(x), np.cos(x), atol=2e-3)


def test_cmap_grid_points_reproduce_map_values():
    # At φ = i·2π/G, ψ = j·2π/G the interpolant equals maps[m, i, j] (checks the layout and
    # the [0, 2π) offset of the grid, without OpenMM).
    rng = np.random.default_rng(3)
    maps = random_maps(rng, 1)
    i, j = 3, 8  # j*2π/G > π: a negative ψ
    phi, psi = i * 2 * np.pi / G, j * 2 * np.pi / G

    def chain(angle):  # 4 atoms whose dihedral is `angle`
        return np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [np.cos(angle), np.sin(angle), 1.0]])

    # Nudge by 1e-12 rad so the angle lands inside patch (i, j), not at the patch boundary.
    coords = np.concatenate([chain(phi + 1e-12), chain(psi + 1e-12)])
    term = md.CMAPTorsions(indices=[list(range(8))], maps=maps, map_index=[0])
    energy, _ = energy_and_forces(diffmd_system(term, coords))
    assert float(energy) == pytest.approx(maps[0, i, j], abs=1e-9)


def test_cmap_matches_openmm_reference():
    coords, maps, rows, map_index = cmap_case()
    e_ref, f_ref = openmm_energy_forces([openmm_cmap(maps, rows, map_index)], coords)
    term = md.CMAPTorsions(indices=rows, maps=maps, map_index=map_index)
    energy, forces = energy_and_forces(diffmd_system(term, coords))
    assert float(energy) == pytest.approx(e_ref, rel=1e-10, abs=1e-12)
    scale = np.abs(f_ref).max()
    np.testing.assert_allclose(np.asarray(forces), f_ref, rtol=0, atol=1e-10 * scale)


def test_cmap_five_atom_constructor_matches_openmm():
    coords, maps, _, _ = cmap_case(seed=1)
    rows5 = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    term = md.CMAPTorsions.from_five_atoms(rows5, maps, [1, 0])
    np.testing.assert_array_equal(term.indices.array, [[0, 1, 2, 3, 1, 2, 3, 4], [5, 6, 7, 8, 6, 7, 8, 9]])
    e_ref, f_ref = openmm_energy_forces([openmm_cmap(maps, term.indices.array, [1, 0])], coords)
    energy, forces = energy_and_forces(diffmd_system(term, coords))
    assert float(energy) == pytest.approx(e_ref, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(np.asarray(forces), f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max())


def test_cmap_forces_and_map_gradient_by_finite_differences():
    coords, maps, rows, map_index = cmap_case(seed=2)

    def energy(x, tables):
        term = md.CMAPTorsions(indices=rows, maps=tables, map_index=map_index)
        return energy_and_forces(diffmd_system(term, x))[0]

    x = jnp.asarray(coords)
    _, forces = energy_and_forces(diffmd_system(md.CMAPTorsions(indices=rows, maps=maps, map_index=map_index), x))
    eps = 1e-6
    for atom, axis in [(2, 0), (4, 1), (9, 2)]:
        step = np.zeros_like(coords)
        step[atom, axis] = eps
        fd = (energy(x + step, maps) - energy(x - step, maps)) / (2 * eps)
        assert float(forces[atom, axis]) == pytest.approx(-float(fd), rel=1e-6, abs=1e-6)

    grad_maps = jax.grad(lambda tables: energy(x, tables))(jnp.asarray(maps))
    assert grad_maps.shape == maps.shape and bool(jnp.all(jnp.isfinite(grad_maps)))
    # The energy is linear in the maps, so a central difference is exact up to rounding.
    for m, i, j in [tuple(np.unravel_index(np.argmax(np.abs(grad_maps)), maps.shape)), (0, 5, 7)]:
        step = np.zeros_like(maps)
        step[m, i, j] = 1e-3
        fd = (energy(x, maps + step) - energy(x, maps - step)) / 2e-3
        assert float(grad_maps[m, i, j]) == pytest.approx(float(fd), rel=1e-7, abs=1e-10)
    assert float(jnp.abs(grad_maps).max()) > 0.1


def test_cmap_checks_its_arguments():
    maps = np.zeros((2, G, G))
    with pytest.raises(ValueError, match="map_index"):
        md.CMAPTorsions(indices=[list(range(8))], maps=maps, map_index=[2])
    with pytest.raises(ValueError, match="map_index"):
        md.CMAPTorsions(indices=[list(range(8))], maps=maps, map_index=[0, 1])
    with pytest.raises(ValueError, match="maps"):
        md.CMAPTorsions(indices=[list(range(8))], maps=np.zeros((1, G, G + 1)), map_index=[0])
    with pytest.raises(ValueError, match="8"):
        md.CMAPTorsions(indices=[list(range(5))], maps=maps, map_index=[0])


def chain_with_dihedral(angle, rng):
    """4 atoms whose dihedral is `angle`, with random bond lengths and angles, randomly
    rotated and shifted (the dihedral is invariant under rigid motions)."""
    r1, r3, z1, z3 = rng.uniform(0.08, 0.15, 4) * [1, 1, 0.5, 0.5]
    local = np.array([[r1, 0, -z1], [0, 0, 0], [0, 0, 0.15], [r3 * np.cos(angle), r3 * np.sin(angle), 0.15 + z3]])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    return local @ q.T + rng.uniform(0, 1, 3)


def improper_case():
    rng = np.random.default_rng(4)
    # (θ, θ0): the last three have |θ − θ0| > π, so θ − θ0 crosses the ±π seam.
    pairs = [(0.4, 0.1), (-1.2, 0.3), (2.9, -2.8), (-3.0, 3.05), (-1.0, math.pi)]
    theta = np.array([p[0] for p in pairs])
    theta0 = np.array([p[1] for p in pairs])
    coords = np.concatenate([chain_with_dihedral(t, rng) for t in theta])
    rows = np.arange(4 * len(pairs)).reshape(-1, 4)
    k = np.array([83.68, 502.08, 200.0, 120.0, 60.0])
    return coords, rows, theta0, k, theta


def test_harmonic_impropers_match_openmm_across_the_seam():
    coords, rows, theta0, k, theta = improper_case()
    np.testing.assert_allclose(term_dihedrals(jnp.asarray(coords)[rows], md.NoBoundary(3)), theta, atol=1e-12)
    force = openmm.CustomTorsionForce(IMPROPER_EXPRESSION)
    force.addPerTorsionParameter("k")
    force.addPerTorsionParameter("theta0")
    for row, k_i, t0 in zip(rows, k, theta0):
        force.addTorsion(*map(int, row), [float(k_i), float(t0)])
    e_ref, f_ref = openmm_energy_forces([force], coords)
    term = md.HarmonicImpropers(indices=rows, theta0=theta0, k=k)
    energy, forces = energy_and_forces(diffmd_system(term, coords))
    assert float(energy) == pytest.approx(e_ref, rel=1e-12)
    np.testing.assert_allclose(np.asarray(forces), f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max())


def test_harmonic_improper_gradients_are_finite_at_theta0():
    coords, rows, theta0, k, theta = improper_case()
    # θ exactly at θ0 (Δθ = 0, where abs/min would have a kink): finite gradients, zero force.
    term = md.HarmonicImproper(*map(int, rows[0]), theta[0], 83.68)

    def energy(x, t0, kk):
        single = md.HarmonicImpropers(indices=rows[:1], theta0=t0, k=kk)
        return energy_and_forces(diffmd_system(single, x))[0]

    grads = jax.grad(energy, argnums=(0, 1, 2))(jnp.asarray(coords), jnp.asarray(theta[:1]), jnp.asarray([83.68]))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    np.testing.assert_allclose(np.asarray(grads[0]), 0.0, atol=1e-9)
    _, forces = energy_and_forces(diffmd_system(term, coords))
    np.testing.assert_allclose(np.asarray(forces), 0.0, atol=1e-9)
    assert md.HarmonicImpropers.mergeable and not md.CMAPTorsions.mergeable
