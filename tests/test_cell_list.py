"""CellListNeighborFinder: the same pairs as brute force (2-D and 3-D, rectangular boxes,
exclusions), overflow of the cell slots reallocated eagerly and an error under tracing, and
simulations (values, reverse- and forward-mode derivatives) equal to DistanceNeighborFinder's."""

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from test_neighbors import brute_force_pairs, build, listed_pairs, lj_fluid

R = md.REDUCED_UNITS


def uniform_coords(n, sides, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, len(sides))) * sides


def built(finder, coords, boundary, excluded=np.zeros((0, 2), np.int32)):
    capacity = finder.initial_capacity(jnp.asarray(coords), boundary, excluded)
    return capacity, build(finder, jnp.asarray(coords), boundary, excluded, capacity)


@pytest.mark.parametrize("n_dims, sides, n", [(3, [4.3, 5.1, 6.2], 300), (2, [6.1, 7.3], 200)])
def test_pair_set_equals_brute_force(n_dims, sides, n):
    sides = np.asarray(sides)
    boundary = md.RectangularBoundary(sides)
    cutoff = 1.2
    coords = uniform_coords(n, sides, seed=n_dims)
    coords[:5] += sides  # outside the box: the grid must wrap them
    excluded = np.array([[0, 1], [2, 7], [10, 11], [5, 120]], np.int32)
    capacity, nl = built(md.CellListNeighborFinder(cutoff), coords, boundary, excluded)
    assert capacity.grid is not None and min(capacity.grid) >= 3  # the cell grid is really used
    expected = brute_force_pairs(coords, sides, cutoff, excluded=[tuple(p) for p in excluded])
    assert listed_pairs(nl) == expected
    assert not bool(nl.overflowed)
    assert {tuple(p) for p in nl.pairs()} == expected


def test_small_box_falls_back_to_all_pairs_and_agrees():
    """Fewer than 3 cells per side: every atom is a candidate (the distance finder's build)."""
    sides = np.array([3.0, 3.0, 3.0])
    coords = uniform_coords(60, sides, seed=1)
    capacity, nl = built(md.CellListNeighborFinder(1.2), coords, md.RectangularBoundary(sides))
    assert capacity.grid is None
    assert listed_pairs(nl) == brute_force_pairs(coords, sides, 1.2)


def test_cell_overflow_is_detected_and_reallocated_eagerly():
    """Starts sized for a uniform density, then every atom in one corner: too many atoms per
    cell. Eagerly, simulate grows the cell slots and reruns; under jit it is an error."""
    sides = np.array([6.0, 6.0, 6.0])
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    crowded = 0.2 + 0.32 * grid + np.random.default_rng(3).normal(0, 0.01, grid.shape)  # 216 atoms, 8 cells
    n = len(crowded)
    boundary = md.RectangularBoundary(sides)
    finder = md.CellListNeighborFinder(1.5, capacity=n - 1)  # traced-style sizing: from the density
    capacity = finder.given_capacity(n, boundary)
    nl = build(finder, jnp.asarray(crowded), boundary, np.zeros((0, 2), np.int32), capacity)
    assert int(nl.max_cell_count) > capacity.cell_slots and bool(nl.overflowed)

    velocities = md.random_velocities(jax.random.PRNGKey(0), jnp.ones(n), 0.1, R)
    system = md.System(md.Atoms.uniform(n, mass=1.0, sigma=0.3, epsilon=0.5), jnp.asarray(crowded), boundary,
                       velocities=velocities, units=R, neighbor_finder=finder,
                       pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(1.2)),))
    run = md.simulate(system, md.VelocityVerlet(0.002), 10)
    assert not bool(run.state.neighbors.overflowed)
    assert run.state.neighbors.capacity.cell_slots > capacity.cell_slots
    reference = md.simulate(eqx.tree_at(lambda s: s.neighbor_finder, system, md.DistanceNeighborFinder(1.5)), md.VelocityVerlet(0.002), 10)
    np.testing.assert_allclose(run.coords, reference.coords, rtol=1e-10, atol=1e-12)
    with pytest.raises(Exception, match="neighbor list overflow"):
        jax.jit(lambda: md.simulate(system, md.VelocityVerlet(0.002), 10).coords)()


def fluid(finder, n=256, seed=0):
    side = (n / 0.6) ** (1 / 3)  # reduced density 0.6: 7.5 σ, 4 cells of 1.88 per side
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    coords = (grid + 0.5) * (side / 7) + np.random.default_rng(seed).normal(0, 0.03, (n, 3))
    velocities = md.random_velocities(jax.random.PRNGKey(seed), jnp.ones(n), 1.0, R)
    return lj_fluid(jnp.asarray(coords), velocities, md.CubicBoundary(side), finder, rc=1.5)


@pytest.mark.slow  # ~11 s; the rows are compared with the distance finder's in the default suite
def test_simulation_and_derivatives_equal_the_distance_finder():
    """Values, jax.grad (reverse, checkpointed) and jax.jvp (forward mode) through a run with a
    cell list equal those with the all-pairs finder (same pairs, same arithmetic)."""
    def loss(sigma, finder, mode="reverse"):
        system = fluid(finder)
        system = eqx.tree_at(lambda s: s.atoms, system, md.Atoms.uniform(system.n_atoms, mass=1.0, sigma=sigma, epsilon=1.0))
        trajectory = md.simulate(system, md.VelocityVerlet(0.004), 40, grad_mode=mode)
        return trajectory.state.potential_energy / system.n_atoms

    cell, distance = md.CellListNeighborFinder(1.8), md.DistanceNeighborFinder(1.8)
    capacity = cell.initial_capacity(fluid(cell).coords, fluid(cell).boundary, np.zeros((0, 2), np.int32))
    assert capacity.grid == (4, 4, 4)
    value, grad = jax.value_and_grad(loss)(1.0, cell)
    ref_value, ref_grad = jax.value_and_grad(loss)(1.0, distance)
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-7)
    assert abs(float(grad)) > 0.1
    np.testing.assert_allclose(jax.grad(loss)(1.0, cell, "checkpointed"), ref_grad, rtol=1e-7)
    _, tangent = jax.jvp(lambda s: loss(s, cell, "forward"), (1.0,), (1.0,))
    np.testing.assert_allclose(tangent, ref_grad, rtol=1e-7)


@pytest.mark.parametrize("finder", [pytest.param(md.DistanceNeighborFinder(1.8), marks=pytest.mark.slow),
                                    md.CellListNeighborFinder(1.8)], ids=["distance", "cell"])
def test_run_in_chunks_with_start_equals_one_run(finder):
    """simulate(..., start=previous.state) continues exactly: two chunks give the one long run,
    reusing the list (same capacity, no reallocation), and the wrong start is refused."""
    system, integrator = fluid(finder), md.VelocityVerlet(0.004)
    whole = md.simulate(system, integrator, 60)
    first = md.simulate(system, integrator, 25)
    second = md.simulate(system, integrator, 35, start=first.state)
    np.testing.assert_array_equal(second.coords, whole.coords)
    np.testing.assert_array_equal(second.velocities, whole.velocities)
    assert second.state.neighbors.idx.shape == first.state.neighbors.idx.shape
    assert int(second.state.step) == 35
    with pytest.raises(TypeError, match="start must be the MDState"):
        md.simulate(system, integrator, 5, start=first)
    with pytest.raises(ValueError, match="start has coordinates of shape"):
        small = eqx.tree_at(lambda s: s.coords, first.state, first.state.coords[:10])
        md.simulate(system, integrator, 5, start=small)


def test_vmap_over_replicas_with_a_cell_list():
    """Traced starts (vmap): the cell slots come from the density; results equal a loop."""
    finder = md.CellListNeighborFinder(1.8, capacity=60)
    base = fluid(finder)
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    coords = jnp.stack([base.coords + 0.02 * jax.random.normal(k, base.coords.shape) for k in keys])

    def run(c):
        system = eqx.tree_at(lambda s: s.coords, base, c)
        trajectory = md.simulate(system, md.VelocityVerlet(0.004), 20)
        return trajectory.coords, trajectory.state.neighbors.capacity.grid

    batched, grid = jax.vmap(lambda c: run(c)[0])(coords), run(coords[0])[1]
    assert grid == (4, 4, 4)
    for r in range(2):
        np.testing.assert_allclose(batched[r], run(coords[r])[0], rtol=1e-10, atol=1e-12)
    assert not np.allclose(batched[0], batched[1])


@pytest.mark.parametrize("finder", [pytest.param(md.DistanceNeighborFinder(1.8), marks=pytest.mark.slow),
                                    md.CellListNeighborFinder(1.8)], ids=["distance", "cell"])
def test_eager_overflow_reruns_only_the_affected_chunk(finder, monkeypatch):
    """A list with exactly the start's slots overflows as the hot lattice melts. Eagerly, a long run goes in
    chunks and only a chunk whose list overflowed is rerun; the trajectory and the logs are
    those of one run with room to spare (a jitted run of the whole length)."""
    simulate_module = importlib.import_module("diffmd.run.simulate")
    monkeypatch.setattr(simulate_module, "EAGER_CHUNK_STEPS", 20)
    calls = []
    original = simulate_module._run

    def spy(system, integrator, key, start, config):
        calls.append(config.n_steps)
        return original(system, integrator, key, start, config)

    monkeypatch.setattr(simulate_module, "_run", spy)
    loggers = {"pe": md.PotentialEnergyLogger(5), "coords": md.CoordinatesLogger(10)}
    system = eqx.tree_at(lambda s: s.loggers, fluid(finder), loggers)
    hot = md.random_velocities(jax.random.PRNGKey(1), jnp.ones(system.n_atoms), 3.0, R)
    system = eqx.tree_at(lambda s: s.velocities, system, hot)
    tight = int(finder.count_neighbors(system.coords, system.boundary, np.zeros((0, 2), np.int32)))
    system = eqx.tree_at(lambda s: s.neighbor_finder, system, finder.with_capacity(tight))
    integrator = md.VelocityVerlet(0.004)
    run = md.simulate(system, integrator, 90)
    assert calls[:1] == [20] and sum(calls) > 90  # chunks of 20 (+ 10), some rerun ...
    assert len(calls) < 2 * 5  # ... but not all of them
    roomy = eqx.tree_at(lambda s: s.neighbor_finder, system, finder.with_capacity(system.n_atoms - 1))
    reference = jax.jit(lambda: md.simulate(roomy, integrator, 90))()
    np.testing.assert_allclose(run.coords, reference.coords, rtol=1e-9, atol=1e-10)
    for name in loggers:
        assert run.logs[name].shape == reference.logs[name].shape
        np.testing.assert_allclose(run.logs[name], reference.logs[name], rtol=1e-9, atol=1e-10)
    assert int(run.state.step) == 90


cells_module = importlib.import_module("diffmd.neighbors.cells")
build_module = importlib.import_module("diffmd.kernels.build")


@pytest.mark.skipif(not build_module.available(), reason="compiled kernels unavailable")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("n_dims, sides, n", [(3, [4.3, 5.1, 6.2], 300), (2, [6.1, 7.3], 200)])
def test_compiled_build_gives_the_pure_jax_rows(dtype, n_dims, sides, n):
    """The compiled cell build (`_native/cell_rows.cc`) lists the same neighbors in the same
    order as the pure-JAX build, with the same counts: with exclusions, atoms outside the box,
    rows too short for the most crowded atoms (same truncation, same count), and under vmap."""
    sides = np.asarray(sides)
    boundary = md.RectangularBoundary(jnp.asarray(sides, dtype))
    coords = uniform_coords(n, sides, seed=n_dims)
    coords[:5] += sides
    coords = jnp.asarray(coords, dtype)
    excluded = np.array([[0, 1], [2, 7], [10, 11], [5, 120]], np.int32)
    finder = md.CellListNeighborFinder(1.2)
    capacity = finder.initial_capacity(coords, boundary, excluded)
    slots, cell_capacity, grid = capacity.slots, capacity.cell_slots, capacity.grid
    assert grid is not None and cells_module.native_available(coords)  # the compiled build is compared
    # the pure-JAX build compiled as one program (eagerly, each of its operations would compile on its own)
    reference_build = {k: jax.jit(lambda x, k=k: cells_module.cell_build_jax(x, boundary, 1.2, excluded, k,
                                                                             cell_capacity, grid))
                       for k in (slots, 3)}
    for k in (slots, 3):  # 3 slots: most rows overflow
        compiled = cells_module.cell_build(coords, boundary, 1.2, excluded, k, cell_capacity, grid)
        reference = reference_build[k](coords)
        for got, want in zip(compiled, reference):
            np.testing.assert_array_equal(got, want)
    count = cells_module.cell_build(coords, boundary, 1.2, excluded, slots, cell_capacity, grid, count_only=True)
    assert int(count) == int(reference[1]) > 3
    shifted = jnp.stack([coords, coords + 0.37])
    batched = jax.vmap(lambda x: cells_module.cell_build(x, boundary, 1.2, excluded, slots, cell_capacity, grid))(shifted)
    for b in range(2):
        want = reference_build[slots](shifted[b])
        np.testing.assert_array_equal(batched[0][b], want[0])
