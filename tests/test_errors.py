"""Bad input gives an error that names the problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md

R = md.REDUCED_UNITS
COORDS = jnp.array([[0.5, 0.5, 0.5], [1.6, 0.5, 0.5], [0.5, 1.7, 0.5], [1.5, 1.5, 1.6]])
BOX = md.CubicBoundary(4.0)


def atoms(n=4):
    return md.Atoms.uniform(n, mass=1.0, sigma=1.0, epsilon=1.0)


def system(**kwargs):
    args = dict(atoms=atoms(), coords=COORDS, boundary=BOX, pairwise_inters=(md.LennardJones(),), units=R)
    args.update(kwargs)
    return md.System(**args)


def test_valid_reference_system_builds():
    """The baseline used below is itself valid (so each error comes from the one change)."""
    traj = md.simulate(system(), md.VelocityVerlet(0.001), 2)
    assert np.all(np.isfinite(traj.coords))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(atoms=md.Atoms.uniform(5, mass=1.0, sigma=1.0, epsilon=1.0)), r"coords has 4 rows but atoms has 5 atoms"),
        (dict(velocities=jnp.zeros((3, 3))), r"velocities shape \(3, 3\) != coords shape \(4, 3\)"),
        (dict(velocities=jnp.zeros((4, 2))), r"velocities shape"),
        (dict(coords=COORDS[:, :2]), r"coords are 2-D but the boundary is 3-D"),
        (dict(coords=COORDS, boundary=md.CubicBoundary(4.0, n_dims=2)), r"coords are 3-D but the boundary is 2-D"),
        (dict(coords=COORDS[:, 0]), r"coords must have shape \(N, 2\) or \(N, 3\)"),
        (dict(coords=COORDS.at[2, 1].set(jnp.nan)), r"coords contain NaN or inf \(first at atom 2\)"),
        (dict(coords=COORDS.at[3, 0].set(jnp.inf)), r"coords contain NaN or inf \(first at atom 3\)"),
        (dict(velocities=jnp.zeros((4, 3)).at[1, 1].set(jnp.nan)), r"velocities contain NaN"),
        (dict(coords=jnp.zeros((4, 3), jnp.int32)), r"coords must be floating point"),
    ],
)
def test_bad_system_input(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        system(**kwargs)


def test_bad_atoms_and_topology():
    with pytest.raises(ValueError, match="mass must be positive, atom 1"):
        md.Atoms(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma has shape"):
        md.Atoms(jnp.ones(3), sigma=jnp.ones(2))
    with pytest.raises(ValueError, match=r"epsilon is NaN \(atom 2\)"):
        md.Atoms(jnp.ones(3), sigma=jnp.ones(3), epsilon=jnp.array([1.0, 1.0, jnp.nan]))
    # parameters that are not given do not exist (no silent zeros)
    with pytest.raises(AttributeError, match="no parameter 'charge'"):
        md.Atoms.uniform(4, mass=1.0, sigma=1.0).charge
    with pytest.raises(ValueError, match=r"LennardJones needs per-atom 'sigma', 'epsilon', which the Atoms do not have"):
        system(atoms=md.Atoms.uniform(4, mass=1.0))
    with pytest.raises(ValueError, match=r"Coulomb needs per-atom 'charge'"):
        system(pairwise_inters=(md.LennardJones(), md.Coulomb()))
    with pytest.raises(ValueError, match="out of range for 4 atoms"):
        system(bonded_inters=([md.HarmonicBond(0, 4, 1.0, 1.0)],))
    with pytest.raises(ValueError, match="exclusions refer to atom 9"):
        system(exclusions=[(0, 9)])
    with pytest.raises(ValueError, match="paired with itself"):
        system(exclusions=[(2, 2)])
    with pytest.raises(TypeError, match="PairwiseInteraction"):
        system(pairwise_inters=(md.HarmonicBond(0, 1, 1.0, 1.0),))
    with pytest.raises(TypeError, match="Logger"):
        system(loggers={"x": "coords"})
    with pytest.raises(ValueError, match="every must be a positive integer"):
        md.CoordinatesLogger(0)


def test_cutoff_larger_than_half_box():
    with pytest.raises(ValueError, match=r"cutoff 2.5 exceeds half the smallest box side \(2.0\)"):
        system(pairwise_inters=(md.LennardJones(cutoff=md.ShiftedForceCutoff(2.5)),))
    rect = md.RectangularBoundary([6.0, 6.0, 3.0])  # the smallest side counts
    with pytest.raises(ValueError, match="half the smallest box side"):
        system(boundary=rect, pairwise_inters=(md.LennardJones(cutoff=md.PlainCutoff(1.6)),))
    with pytest.raises(ValueError, match="DistanceNeighborFinder: cutoff 2.2 exceeds half"):
        system(neighbor_finder=md.DistanceNeighborFinder(2.2))
    # no cutoff at all means nearest image only, which is allowed
    system(pairwise_inters=(md.LennardJones(),))


def test_neighbor_interaction_needs_finite_cutoff():
    with pytest.raises(ValueError, match=r"use_neighbors=True\) needs a finite cutoff"):
        system(pairwise_inters=(md.LennardJones(use_neighbors=True),), neighbor_finder=md.DistanceNeighborFinder(1.5))
    with pytest.raises(ValueError, match="exceeds the neighbor finder's cutoff"):
        system(pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(1.8)),),
               neighbor_finder=md.DistanceNeighborFinder(1.5))


def test_bad_neighbor_finder_arguments():
    with pytest.raises(ValueError, match="cutoff must be positive"):
        md.DistanceNeighborFinder(0.0)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        md.DistanceNeighborFinder(1.0, capacity=0)
    with pytest.raises(ValueError, match="every must be >= 1"):
        md.DistanceNeighborFinder(1.0, every=0)
    with pytest.raises(ValueError, match=r"eligible must be an \(N, N\) matrix"):
        md.DistanceNeighborFinder(1.0, eligible=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="eligible matrix is larger than the number of atoms"):
        system(neighbor_finder=md.DistanceNeighborFinder(1.5, eligible=~np.eye(6, dtype=bool) & False))


@pytest.mark.parametrize("n_steps", [-1, -100, 2.5, "10"])
def test_bad_n_steps(n_steps):
    with pytest.raises(ValueError, match="n_steps must be a non-negative integer"):
        md.simulate(system(), md.VelocityVerlet(0.001), n_steps)


def test_andersen_without_key():
    integrator = md.VelocityVerlet(0.001, coupling=(md.FrictionThermostat(0.9), md.AndersenThermostat(1.0, 1.0)))
    with pytest.raises(ValueError, match=r"needs random numbers; pass key=jax\.random\.key\(seed\)"):
        md.simulate(system(), integrator, 3)


def test_bad_coupling():
    with pytest.raises(TypeError, match="coupling must be a Coupling"):
        md.VelocityVerlet(0.001, coupling=(md.FrictionThermostat(0.9), "berendsen"))


def test_neighbor_list_overflow_under_jit():
    lattice = jnp.stack(jnp.meshgrid(*[jnp.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.2 + 0.6
    box = md.CubicBoundary(4.8)

    def run(coords):
        s = md.System(atoms=md.Atoms.uniform(64, mass=1.0, sigma=1.0, epsilon=1.0), coords=coords, boundary=box,
                      pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(2.0)),),
                      neighbor_finder=md.DistanceNeighborFinder(2.2, capacity=10), units=R)
        return md.simulate(s, md.VelocityVerlet(0.001), 3).coords

    with pytest.raises(Exception, match=r"neighbor list overflow.*capacity"):
        jax.block_until_ready(jax.jit(run)(lattice))
    # without an explicit capacity the list cannot be sized from traced coordinates
    def unsized(coords):
        s = md.System(atoms=md.Atoms.uniform(64, mass=1.0, sigma=1.0, epsilon=1.0), coords=coords, boundary=box,
                      pairwise_inters=(md.LennardJones(use_neighbors=True, cutoff=md.ShiftedForceCutoff(2.0)),),
                      neighbor_finder=md.DistanceNeighborFinder(2.2), units=R)
        return md.simulate(s, md.VelocityVerlet(0.001), 3).coords

    with pytest.raises(md.SimulationError, match="cannot size the neighbor list.*capacity"):
        jax.jit(unsized)(lattice)


OVERLAP = jnp.array([[1.0, 1.0, 1.0], [1.05, 1.0, 1.0], [2.0, 2.0, 2.0]])


def test_blow_up_is_reported_with_its_step():
    s = md.System(atoms=md.Atoms.uniform(3, mass=1.0, sigma=1.0, epsilon=1.0), coords=OVERLAP,
                  boundary=md.CubicBoundary(3.0), pairwise_inters=(md.LennardJones(),), units=R)
    with pytest.raises(md.SimulationError, match=r"blew up.*at step \d+.*dt = 0.1"):
        md.simulate(s, md.VelocityVerlet(0.1), 20)
    # the step named is the first non-finite one: the run before it is finite
    traj = md.simulate(s, md.VelocityVerlet(0.1), 20, check=False)
    bad = int(traj.state.first_nonfinite_step)
    assert bad > 0
    with pytest.raises(md.SimulationError, match=f"at step {bad}\\b"):
        md.simulate(s, md.VelocityVerlet(0.1), 20)
    ok = md.simulate(s, md.VelocityVerlet(0.1), bad - 1, check=False)
    assert np.all(np.isfinite(ok.coords)) and np.all(np.isfinite(ok.velocities))
    # same configuration under jit: the error comes from the compiled code
    with pytest.raises(Exception, match="blew up"):
        jax.block_until_ready(jax.jit(lambda c: md.simulate(
            md.System(atoms=s.atoms, coords=c, boundary=s.boundary, pairwise_inters=s.pairwise_inters, units=R),
            md.VelocityVerlet(0.1), 20).coords)(OVERLAP))


def test_blow_up_in_open_space_is_detected():
    """Without a periodic box a blow-up can stay finite (atoms flung to 1e17): still an error."""
    coords = jnp.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    atoms = md.Atoms.uniform(2, mass=1.0, sigma=1.0, epsilon=1.0)
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[md.LennardJones()],
                       units=md.REDUCED_UNITS)
    with pytest.raises(md.SimulationError, match="blew up"):
        md.simulate(system, md.VelocityVerlet(0.1), 20)
