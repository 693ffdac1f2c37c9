"""Systems of 100,000 atoms fit: exclusions and exceptions are sparse lists, never N×N (slow)."""

import resource

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md


@pytest.mark.slow
def test_hundred_thousand_atoms_with_exclusions_and_exceptions_fit():
    """100,002 atoms as 33,334 three-atom molecules (σ, ε, charges; the 1-2 and 1-3 pairs of
    each molecule excluded, a third of them exceptions with their own parameters), LJ + reaction
    field over a cell list: a float32 simulation and its gradient run, in far less memory than
    one N×N boolean matrix (10 GB)."""
    n_molecules = 33_334
    n = 3 * n_molecules
    rng = np.random.default_rng(0)
    side = (n / 100.0) ** (1 / 3)  # 100 atoms / nm³, water-like
    centres = rng.uniform(0, side, (n_molecules, 3))
    offsets = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [-0.03, 0.095, 0.0]])
    coords = (centres[:, None, :] + offsets[None]).reshape(n, 3) % side
    first = 3 * np.arange(n_molecules)
    pairs = np.concatenate([np.stack([first, first + 1], 1), np.stack([first, first + 2], 1),
                            np.stack([first + 1, first + 2], 1)])
    exceptions = pairs[: n_molecules]
    atoms = md.Atoms(mass=np.tile([16.0, 1.0, 1.0], n_molecules).astype(np.float32),
                     charge=np.tile([-0.8, 0.4, 0.4], n_molecules).astype(np.float32),
                     sigma=np.tile([0.315, 0.1, 0.1], n_molecules).astype(np.float32),
                     epsilon=np.tile([0.64, 0.0, 0.0], n_molecules).astype(np.float32))
    system = md.System(
        atoms, jnp.asarray(coords, jnp.float32), md.CubicBoundary(np.float32(side)),
        pairwise_inters=[md.LennardJones(cutoff=md.SwitchedCutoff(0.9, 0.8), use_neighbors=True),
                         md.CoulombReactionField(distance=0.9, use_neighbors=True)],
        bonded_inters=[md.NonbondedExceptions(indices=exceptions, charge_prod=np.full(len(exceptions), -0.1),
                                              sigma=np.full(len(exceptions), 0.2),
                                              epsilon=np.full(len(exceptions), 0.1)),
                       md.HarmonicBonds(indices=pairs[:2 * n_molecules], r0=np.full(2 * n_molecules, 0.1),
                                        k=np.full(2 * n_molecules, 1e3))],
        exclusions=pairs, neighbor_finder=md.CellListNeighborFinder(cutoff=1.0),
    )
    assert len(system.excluded_pairs()) == len(pairs)

    def loss(scale):
        live = system.__class__(system.atoms.replace(charge=system.atoms.charge * scale), system.coords,
                                system.boundary, pairwise_inters=system.pairwise_inters,
                                bonded_inters=system.bonded_inters, exclusions=system.exclusions,
                                neighbor_finder=system.neighbor_finder)
        return md.simulate(live, md.VelocityVerlet(0.0002), 5).state.potential_energy

    value, grad = jax.value_and_grad(loss)(jnp.float32(1.0))
    assert np.isfinite(float(value)) and np.isfinite(float(grad)) and float(grad) != 0.0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gib < 6.0, f"peak RSS {peak_gib:.1f} GiB"
