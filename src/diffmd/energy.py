"""Potential energy and forces of a `System`: the orchestration of its three kinds of term.

* pairwise terms, grouped by the rows they sum over (the neighbor list, or every pair), each
  group in one fused pass (`diffmd.kernels.pairs`), plus the 1-4 pairs scaled by `weight_14`;
* bonded terms: forces from autodiff of their energies (force-only terms add their forces);
* global terms: forces from autodiff of their energies.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .forces.base import BondedForce, BondedInteraction
from .forces.pairs_14 import scaled_pairs
from .kernels.pairs import DERIVATIVES, pair_energy_forces
from .neighbors import NeighborList, all_neighbors_array


def _pair_groups(system, neighbors: NeighborList | None):
    """[(terms, rows)]: the terms that read the neighbor list, and those that see every pair."""
    listed = [t for t in system.pairwise_inters if t.use_neighbors and neighbors is not None]
    everyone = [t for t in system.pairwise_inters if not (t.use_neighbors and neighbors is not None)]
    groups = []
    if listed:
        groups.append((listed, lambda: neighbors.idx))
    if everyone:
        groups.append((everyone, lambda: all_neighbors_array(system.n_atoms, system.excluded_pairs())))
    return groups


def _pairwise(system, coords, neighbors, derivatives: str):
    energy = jnp.zeros((), coords.dtype)
    forces = jnp.zeros_like(coords)
    for terms, rows in _pair_groups(system, neighbors):
        e, f = pair_energy_forces(terms, system.atoms, coords, system.boundary, rows(), derivatives)
        energy, forces = energy + e, forces + f
    e, f = scaled_pairs(system.pairwise_inters, system.atoms, coords, system.boundary, system.pairs_14.array)
    return energy + e, forces + f


def _bonded_energy(system, coords):
    total = jnp.zeros((), coords.dtype)
    for term in system.bonded_inters:
        if isinstance(term, BondedInteraction) and term.n_terms:
            positions = coords[jnp.asarray(term.indices.array)]
            total = total + jnp.sum(term.energy(positions, system.boundary))
    return total


def _global_energy(system, coords):
    total = jnp.zeros((), coords.dtype)
    for term in system.global_inters:
        total = total + jnp.asarray(term.energy(coords, system.boundary, system.atoms), coords.dtype)
    return total


def _bonded_force_only(system, coords):
    forces = jnp.zeros_like(coords)
    for term in system.bonded_inters:
        if not isinstance(term, BondedForce) or not term.n_terms:
            continue
        index = jnp.asarray(term.indices.array)
        term_forces = term.force(coords[index], system.boundary)
        if term_forces.shape != index.shape + (coords.shape[1],):
            raise ValueError(f"{type(term).__name__}.force returned shape {term_forces.shape}, "
                             f"expected {index.shape + (coords.shape[1],)}")
        forces = forces.at[index.reshape(-1)].add(term_forces.reshape(-1, coords.shape[1]).astype(forces.dtype))
    return forces


def energy_and_forces(system, coords: Array | None = None, neighbors: NeighborList | None = None, *,
                      derivatives: str = "any"):
    """(potential energy, forces (N, D)) in the system's energy and energy/length units.

    The energy covers the energy-based terms; force-only terms add forces only. Pairwise
    forces are row sums of s·d (exactly −∇E of the pairwise energy); bonded and global forces
    come from autodiff of their energies.

    `neighbors`: a NeighborList for the pairwise terms with `use_neighbors=True`; without one
    they are summed over all pairs (the same energy, since each applies its cutoff).

    `derivatives` picks the pair kernels for the derivatives that will be taken of the result:

    * "any" (default): the pure-JAX kernel under plain autodiff; every transformation, to
      any order.
    * "reverse": the compiled kernels with their reverse pass (or the pure-JAX kernel with its
      gather-only reverse pass where no compiler exists); for jax.grad / jax.vjp only.
    * "forward": the compiled kernel computes forces and their tangents in one pass; for
      jax.jvp / jax.jacfwd only.

    Values are the same in every case.
    """
    if derivatives not in DERIVATIVES:
        raise ValueError(f"energy_and_forces: derivatives must be one of {DERIVATIVES}, got {derivatives!r}")
    coords = system.coords if coords is None else coords
    if neighbors is None:
        neighbors = _list_for(system, coords)
    return _evaluate(system, coords, neighbors, derivatives)


@eqx.filter_jit
def _evaluate(system, coords, neighbors, derivatives: str):
    """The orchestration, compiled once per System structure (an eager call would otherwise
    dispatch, and compile, every operation on its own; inside a trace it is inlined)."""
    energy, forces = _pairwise(system, coords, neighbors, derivatives)
    if any(isinstance(t, BondedInteraction) and t.n_terms for t in system.bonded_inters) or system.global_inters:
        e, gradient = jax.value_and_grad(lambda x: _bonded_energy(system, x) + _global_energy(system, x))(coords)
        energy, forces = energy + e, forces - gradient.astype(forces.dtype)
    if any(isinstance(t, BondedForce) for t in system.bonded_inters):
        forces = forces + _bonded_force_only(system, coords)
    return energy.astype(coords.dtype), forces


def _list_for(system, coords) -> NeighborList | None:
    """A neighbor list when the system's terms read one (the same energy as all pairs, at O(N)
    cost rather than O(N²) memory): sized from concrete coordinates, or, when they are traced,
    from the finder's `capacity` (an overflow then raises); None when neither is possible."""
    if not system.uses_neighbor_list():
        return None
    finder, boundary, excluded = system.neighbor_finder, system.boundary, system.excluded_pairs().array
    if not isinstance(coords, jax.core.Tracer):
        return finder.build(coords, boundary, excluded, finder.initial_capacity(coords, boundary, excluded))
    if finder.capacity is None:
        return None
    neighbors = finder.build(coords, boundary, excluded, finder.given_capacity(coords.shape[0], boundary))
    return eqx.error_if(neighbors, neighbors.overflowed,
                        f"energy_and_forces: the neighbor list overflowed its capacity ({finder.capacity} slots per "
                        "atom, or its cell slots) at these coordinates; give the neighbor finder a larger capacity")


def energy_terms(system, coords: Array | None = None, neighbors: NeighborList | None = None) -> dict[str, Array]:
    """Potential energy per kind of term: {label: energy}, where a term's label is the class
    name of the OpenMM force it reproduces (its `openmm_force`, e.g. "NonbondedForce" for
    Lennard-Jones, Coulomb, Ewald, exceptions and the dispersion correction together) or else
    its own class name. The values sum to `potential_energy`."""
    from .system import System  # (system.py imports the loggers, which import this module)

    coords = system.coords if coords is None else coords
    if neighbors is None:
        neighbors = _list_for(system, coords)
    groups: dict[str, dict[str, list]] = {}
    for kind in ("pairwise_inters", "bonded_inters", "global_inters"):
        for term in getattr(system, kind):
            label = getattr(term, "openmm_force", type(term).__name__)
            groups.setdefault(label, {"pairwise_inters": [], "bonded_inters": [], "global_inters": []})[kind].append(term)
    excluded = system.excluded_pairs()  # every group keeps the exclusions of the whole system
    return {label: potential_energy(System(atoms=system.atoms, coords=coords, boundary=system.boundary,
                                           neighbor_finder=system.neighbor_finder, units=system.units,
                                           exclusions=excluded, pairs_14=system.pairs_14, **terms),
                                    coords, neighbors)
            for label, terms in groups.items()}


def potential_energy(system, coords: Array | None = None, neighbors: NeighborList | None = None) -> Array:
    """Total potential energy (energy units) of the energy-based terms.

    Args:
        system: the System.
        coords: (N, D) coordinates; default `system.coords`.
        neighbors: a NeighborList for interactions with `use_neighbors=True`; if None they are
            summed over all pairs (same energy, since each applies its own cutoff).
    """
    return energy_and_forces(system, coords, neighbors)[0]


def forces(system, coords: Array | None = None, neighbors: NeighborList | None = None) -> Array:
    """Forces (N, D), energy/length units."""
    return energy_and_forces(system, coords, neighbors)[1]


def kinetic_energy(masses: Array, velocities: Array) -> Array:
    """½ Σ m v² (energy units), in the dtype of the velocities."""
    return 0.5 * jnp.sum(masses.astype(velocities.dtype)[:, None] * velocities**2)


def temperature(masses: Array, velocities: Array, boltzmann: float, n_dof: int | None = None) -> Array:
    """Instantaneous temperature 2K / (n_dof k_B); n_dof defaults to N·D (no constraints, no
    removed centre-of-mass motion; `System.degrees_of_freedom` counts both)."""
    n_dof = velocities.size if n_dof is None else n_dof
    return 2.0 * kinetic_energy(masses, velocities) / (n_dof * boltzmann)


__all__ = ["potential_energy", "energy_and_forces", "forces", "kinetic_energy", "temperature"]

