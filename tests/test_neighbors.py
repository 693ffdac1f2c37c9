"""Neighbor lists: pair sets against brute force, overflow handling, rebuild on displacement,
and no integer leaves in the differentiable System."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffmd as md


def brute_force_pairs(coords, sides, cutoff, excluded=(), eligible=None):
    """{(i, j), i < j} within `cutoff` under the minimum image, minus exclusions / ineligible."""
    coords = np.asarray(coords, np.float64)
    excluded = {tuple(sorted(p)) for p in excluded}
    pairs = set()
    for i, j in itertools.combinations(range(len(coords)), 2):
        d = coords[j] - coords[i]
        if sides is not None:
            d -= sides * np.round(d / sides)
        if np.sqrt(np.sum(d * d)) >= cutoff or (i, j) in excluded:
            continue
        if eligible is not None and not (eligible[i, j] and eligible[j, i]):
            continue
        pairs.add((i, j))
    return pairs


def listed_pairs(neighbors):
    """Pairs (i < j) of a dense full list, checking that every pair is listed in both rows
    and no row lists a neighbor twice."""
    idx = np.asarray(neighbors.idx)
    n = idx.shape[0]
    directed = set()
    for i, row in enumerate(idx):
        real = [int(j) for j in row if j < n]
        assert len(real) == len(set(real)), f"row {i} lists a neighbor twice"
        assert i not in real, f"row {i} lists itself"
        directed.update((i, j) for j in real)
    assert all((j, i) in directed for i, j in directed), "a pair is listed in one row only"
    return {(i, j) for i, j in directed if i < j}


def build(finder, coords, boundary, excluded, capacity):
    """`finder.build` compiled as one program, as inside a run (called eagerly, each of its
    operations would compile on its own for every new shape)."""
    return jax.jit(lambda c, b: finder.build(c, b, excluded, capacity))(coords, boundary)


def count_neighbors(finder, coords, boundary, excluded):
    """`finder.count_neighbors`, compiled as one program (see `build`)."""
    return jax.jit(lambda c, b: finder.count_neighbors(c, b, excluded))(coords, boundary)


def max_row_count(pairs, n):
    counts = np.zeros(n, int)
    for i, j in pairs:
        counts[i] += 1
        counts[j] += 1
    return int(counts.max())


def lattice(n_side, spacing, n_dims):
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * n_dims, indexing="ij"), -1).reshape(-1, n_dims)
    return (grid + 0.5) * spacing


def lj_fluid(coords, velocities, box, finder, rc=2.5):
    n = coords.shape[0]
    return md.System(
        atoms=md.Atoms.uniform(n, mass=1.0, sigma=1.0, epsilon=1.0),
        coords=coords,
        velocities=velocities,
        boundary=box,
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(rc)),),
        neighbor_finder=finder,
        units=md.REDUCED_UNITS,
    )


@pytest.mark.parametrize("n_dims", [2, 3])
def test_pair_set_equals_brute_force(n_dims):
    rng = np.random.default_rng(n_dims)
    n = 40
    sides = np.array([4.0, 5.0, 4.5][:n_dims])
    boundary = md.RectangularBoundary(sides)
    coords = rng.uniform(-0.5, 1.5, (n, n_dims)) * sides  # also outside the primary cell
    cutoff = 1.6 if n_dims == 3 else 1.2
    all_close = sorted(brute_force_pairs(coords, sides, cutoff))
    assert len(all_close) > 20
    # exclude some pairs that are within the cutoff (given in either order) and some that are not
    excl = [all_close[k][::-1] for k in rng.choice(len(all_close), 6, replace=False)] + [(0, 1), (2, 3)]
    eligible = rng.uniform(size=(n, n)) > 0.2
    eligible = eligible & eligible.T
    np.fill_diagonal(eligible, True)
    finder = md.DistanceNeighborFinder(cutoff, eligible=eligible)
    system = md.System(atoms=md.Atoms.uniform(n, mass=1.0), coords=jnp.asarray(coords), boundary=boundary,
                       neighbor_finder=finder, exclusions=excl, units=md.REDUCED_UNITS)
    expected = brute_force_pairs(coords, sides, cutoff, excl, eligible)
    excluded = system.excluded_pairs().array
    count = int(count_neighbors(finder, system.coords, boundary, excluded))
    assert count == max_row_count(expected, n)
    nl = build(finder, system.coords, boundary, excluded, md.Capacity(count + 7))
    assert listed_pairs(nl) == expected
    assert int(nl.max_count) == count and not bool(nl.overflowed)
    # exact capacity: still complete, not overflowed
    nl = build(finder, system.coords, boundary, excluded, md.Capacity(count))
    assert listed_pairs(nl) == expected and not bool(nl.overflowed)
    # one slot short: flagged as overflowed (the most crowded atom lost a neighbor, and the
    # list says so)
    nl = build(finder, system.coords, boundary, excluded, md.Capacity(count - 1))
    assert bool(nl.overflowed) and int(np.sum(np.asarray(nl.mask))) < 2 * len(expected)


def test_asymmetric_eligible_and_open_boundary():
    """A pair is ineligible if either entry of the matrix is False; NoBoundary uses plain distances."""
    rng = np.random.default_rng(3)
    n = 25
    coords = rng.uniform(0, 3, (n, 2))
    eligible = np.ones((n, n), bool)
    eligible[0, :] = False  # atom 0 with anyone (only the (0, j) entries)
    eligible[7, 3] = False
    finder = md.DistanceNeighborFinder(1.0, eligible=eligible)
    system = md.System(atoms=md.Atoms.uniform(n, mass=1.0), coords=jnp.asarray(coords),
                       boundary=md.NoBoundary(n_dims=2), neighbor_finder=finder)
    nl = build(finder, system.coords, system.boundary, system.excluded_pairs().array, md.Capacity(200))
    expected = brute_force_pairs(coords, None, 1.0, eligible=eligible)
    assert listed_pairs(nl) == expected
    assert not any(0 in p for p in expected) and (3, 7) not in expected


def test_simulate_builds_the_brute_force_list():
    """The list `simulate` carries (0 steps) is the brute-force set, exclusions applied."""
    coords = jnp.asarray(lattice(4, 1.2, 3)) + 0.05 * jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    box = md.CubicBoundary(4.8)
    system = md.System(
        atoms=md.Atoms.uniform(64, mass=1.0, sigma=1.0, epsilon=1.0), coords=coords, boundary=box,
        pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(2.0)),),
        neighbor_finder=md.DistanceNeighborFinder(2.3), exclusions=[(0, 1), (5, 4)], units=md.REDUCED_UNITS)
    nl = md.simulate(system, md.VelocityVerlet(0.005), 0).state.neighbors
    assert listed_pairs(nl) == brute_force_pairs(coords, np.full(3, 4.8), 2.3, [(0, 1), (4, 5)])
    assert nl.capacity.slots >= int(nl.max_count)


# ---- overflow -----------------------------------------------------------------------------

N_SIDE, SPACING = 5, 1.5
COORDS_2D = jnp.asarray(lattice(N_SIDE, SPACING, 2))
BOX_2D = md.CubicBoundary(N_SIDE * SPACING, n_dims=2)
VEL_2D = md.random_velocities(jax.random.PRNGKey(1), jnp.ones(N_SIDE**2), 1.0, md.REDUCED_UNITS, n_dims=2)
DT = jnp.asarray(0.005)


def test_overflow_eager_reallocates_and_matches_ample_capacity():
    ample = md.simulate(lj_fluid(COORDS_2D, VEL_2D, BOX_2D, md.DistanceNeighborFinder(3.0, capacity=24)),
                        md.VelocityVerlet(DT), 40)
    tiny = md.simulate(lj_fluid(COORDS_2D, VEL_2D, BOX_2D, md.DistanceNeighborFinder(3.0, capacity=4)),
                       md.VelocityVerlet(DT), 40)
    needed = int(ample.state.neighbors.max_count)
    assert needed > 4
    assert tiny.state.neighbors.capacity.slots >= needed  # reallocated
    assert not bool(tiny.state.neighbors.overflowed)
    np.testing.assert_allclose(tiny.coords, ample.coords, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tiny.velocities, ample.velocities, rtol=0, atol=1e-12)
    # and the run really moved: a list that silently dropped pairs would differ
    assert float(jnp.max(jnp.abs(ample.coords - COORDS_2D))) > 0.05


def test_overflow_under_jit_raises():
    def final(coords):
        system = lj_fluid(coords, VEL_2D, BOX_2D, md.DistanceNeighborFinder(3.0, capacity=4))
        return md.simulate(system, md.VelocityVerlet(DT), 10).coords

    with pytest.raises(Exception, match="neighbor list overflow"):
        jax.block_until_ready(jax.jit(final)(COORDS_2D))
    # the same jitted function with enough capacity runs fine
    def final_ok(coords):
        system = lj_fluid(coords, VEL_2D, BOX_2D, md.DistanceNeighborFinder(3.0, capacity=24))
        return md.simulate(system, md.VelocityVerlet(DT), 10).coords

    assert np.all(np.isfinite(jax.jit(final_ok)(COORDS_2D)))


# ---- rebuilds ------------------------------------------------------------------------------


def test_displacement_rebuild_matches_no_neighbor_finder():
    """every=None: rebuilt only when an atom moved > skin/2; with a thin skin (0.1σ) and 100
    steps at T = 1 atoms move several skins, so a list that never rebuilt would miss pairs."""
    coords = jnp.asarray(lattice(6, 1.2, 2))
    box = md.CubicBoundary(7.2, n_dims=2)
    vel = md.random_velocities(jax.random.PRNGKey(2), jnp.ones(36), 1.0, md.REDUCED_UNITS, n_dims=2)
    integrator = md.VelocityVerlet(DT)
    reference = md.simulate(lj_fluid(coords, vel, box, md.NoNeighborFinder()), integrator, 100)
    listed = md.simulate(lj_fluid(coords, vel, box, md.DistanceNeighborFinder(2.7)), integrator, 100)
    assert reference.state.neighbors is None
    moved = np.max(np.linalg.norm(np.asarray(box.vector(coords, reference.coords)), axis=-1))
    assert moved > 0.3  # > 3 skins
    # the list was rebuilt during the run (its reference coordinates are not the start)
    assert float(jnp.max(jnp.abs(listed.state.neighbors.reference_coords - coords))) > 0.05
    np.testing.assert_allclose(listed.coords, reference.coords, rtol=0, atol=1e-10)
    np.testing.assert_allclose(listed.velocities, reference.velocities, rtol=0, atol=1e-10)
    np.testing.assert_allclose(listed.state.potential_energy, reference.state.potential_energy, rtol=1e-11)


# ---- gradients: indices are static -----------------------------------------------------


def test_no_integer_leaves_and_grad_wrt_system():
    """Every leaf of a System (with a neighbor finder, exclusions, bonds) is floating point, so
    jax.grad with respect to the whole System works through a run with a neighbor list; its
    σ part matches finite differences."""
    n = N_SIDE**2

    def make(sigma):
        return md.System(
            atoms=md.Atoms(jnp.ones(n), sigma=sigma, epsilon=jnp.ones(n)), coords=COORDS_2D, velocities=VEL_2D,
            boundary=BOX_2D, pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(2.5)),),
            bonded_inters=([md.HarmonicBond(0, 1, 1.5, 10.0)],), neighbor_finder=md.DistanceNeighborFinder(3.0),
            exclusions=[(0, 1)], units=md.REDUCED_UNITS)

    system = make(jnp.ones(n))
    leaves = jax.tree_util.tree_leaves(system)
    assert leaves and all(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in leaves), \
        [jnp.result_type(leaf) for leaf in leaves]

    def loss(system):
        traj = md.simulate(system, md.VelocityVerlet(DT), 20)
        return traj.state.potential_energy / n

    grad = jax.grad(loss)(system)
    assert isinstance(grad, md.System)
    for leaf in jax.tree_util.tree_leaves(grad):
        assert np.all(np.isfinite(leaf))
    for leaf in (grad.atoms.sigma, grad.coords, grad.velocities, grad.bonded_inters[0].r0):
        assert float(jnp.abs(leaf).sum()) > 0
    direction = jax.random.normal(jax.random.PRNGKey(5), (n,))
    h = 1e-5
    fd = (float(loss(make(1 + h * direction))) - float(loss(make(1 - h * direction)))) / (2 * h)
    assert float(grad.atoms.sigma @ direction) == pytest.approx(fd, rel=1e-6)


def test_with_capacity_keeps_everything_else():
    eligible = np.ones((N_SIDE**2,) * 2, bool)
    eligible[0, 1] = eligible[1, 0] = False
    finder = md.DistanceNeighborFinder(3.0, every=4, eligible=eligible, margin=2.0)
    sized = finder.with_capacity(50)
    assert sized.capacity == 50 and finder.capacity is None
    assert (sized.cutoff, sized.every, sized.margin, sized.ineligible) == (3.0, 4, 2.0, finder.ineligible)
    system = lj_fluid(COORDS_2D, VEL_2D, BOX_2D, sized)
    nl = md.simulate(system, md.VelocityVerlet(DT), 0).state.neighbors
    # 25 atoms: at most 24 neighbors each, so the 50 slots asked for are clamped to 24
    assert nl.capacity.slots == N_SIDE**2 - 1 and (0, 1) not in listed_pairs(nl)


@settings(max_examples=12, deadline=None)  # each new shape compiles: the suite's time budget
@given(rows=st.integers(1, 7), cols=st.integers(1, 100), capacity=st.integers(1, 110),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_compact_rows_matches_numpy_nonzero(rows, cols, capacity, density, seed):
    """Bit-packed row compaction: the first `capacity` True columns of each row, padded with cols."""
    from diffmd.neighbors import compact_rows

    mask = np.random.default_rng(seed).random((rows, cols)) < density
    # jitted, as inside a run: one compile per shape rather than one per operation and shape
    got = np.asarray(jax.jit(compact_rows, static_argnums=1)(jnp.asarray(mask), capacity))
    assert got.shape == (rows, capacity) and got.dtype == np.int32
    for r in range(rows):
        expected = np.flatnonzero(mask[r])[:capacity]
        np.testing.assert_array_equal(got[r, :len(expected)], expected)
        assert np.all(got[r, len(expected):] == cols)
