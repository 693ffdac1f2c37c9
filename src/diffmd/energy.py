"""Potential energy and forces of a `System` at given coordinates.

Forces of every energy-based interaction are −∇E by autodiff, so they can never disagree with
their energy; force-only interactions (no energy) add their forces on top.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from .interactions.geometry import safe_norm
from .neighbors import NeighborList, all_pairs


def _gather(atoms, index):
    return jax.tree_util.tree_map(lambda a: a[index], atoms)


def _pair_geometry(system, coords, pairs, mask):
    """Vectors i→j, NaN-safe distances (masked pairs get r = 1), atoms of each side."""
    i, j = pairs[:, 0], pairs[:, 1]
    d = system.boundary.vector(coords[i], coords[j])
    r2 = jnp.sum(d * d, axis=-1)
    if mask is not None:
        r2 = jnp.where(mask, r2, 1.0)
    # Coincident atoms (r = 0) get a zero-gradient distance instead of a NaN one: with a
    # force cap the energy stays finite and the force is zero rather than NaN.
    positive = r2 > 0
    r = jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)
    return d, r, _gather(system.atoms, i), _gather(system.atoms, j)


def _pair_sets(system, inter, neighbors: NeighborList | None):
    """(pairs, mask) an interaction sums over: the neighbor list or the static all-pairs list."""
    if getattr(inter, "use_neighbors", False) and neighbors is not None:
        return neighbors.pairs, neighbors.mask
    return jnp.asarray(all_pairs(system.n_atoms, system.excluded_pairs()).array), None


def _masked_sum(values, mask):
    return jnp.sum(values if mask is None else jnp.where(mask, values, 0.0))


def potential_energy(system, coords: Array | None = None, neighbors: NeighborList | None = None) -> Array:
    """Total potential energy (energy units) of the energy-based interactions.

    Args:
        system: the System.
        coords: (N, D) coordinates; default `system.coords`.
        neighbors: a NeighborList for interactions with `use_neighbors=True`; if None they are
            summed over all pairs (same energy, since each applies its own cutoff).
    """
    coords = system.coords if coords is None else coords
    total = jnp.zeros((), coords.dtype)
    pairs_14 = system.pairs_14.array
    for inter in system.pairwise_inters:
        if not inter.has_energy:
            continue
        pairs, mask = _pair_sets(system, inter, neighbors)
        _, r, atoms_i, atoms_j = _pair_geometry(system, coords, pairs, mask)
        total = total + _masked_sum(inter.pair_energy(r, atoms_i, atoms_j), mask)
        if len(pairs_14):
            _, r14, a14_i, a14_j = _pair_geometry(system, coords, jnp.asarray(pairs_14), None)
            total = total + inter.weight_14 * jnp.sum(inter.potential_14(r14, a14_i, a14_j))
    for inter in system.specific_inters:
        if inter.has_energy and inter.n_terms:
            positions = coords[jnp.asarray(inter.indices.array)]
            total = total + jnp.sum(inter.energy(positions, system.boundary))
    return total.astype(coords.dtype)


def _add_pair_forces(forces, pairs, d, r, magnitude):
    """Scatter pair forces of the given magnitude (positive = repulsive) along i→j."""
    safe_r = jnp.where(r > 0, r, 1.0)
    f_j = (magnitude / safe_r)[:, None] * d  # repulsive: pushes j away from i
    return forces.at[pairs[:, 1]].add(f_j).at[pairs[:, 0]].add(-f_j)


def _force_only(system, coords, neighbors) -> Array:
    """Forces (N, D) from interactions that define only a force."""
    forces = jnp.zeros_like(coords)
    for inter in system.pairwise_inters:
        if inter.has_energy:
            continue
        pairs, mask = _pair_sets(system, inter, neighbors)
        d, r, atoms_i, atoms_j = _pair_geometry(system, coords, pairs, mask)
        magnitude = inter.capped_pair_force(r, atoms_i, atoms_j)
        if mask is not None:
            magnitude = jnp.where(mask, magnitude, 0.0)
        forces = _add_pair_forces(forces, pairs, d, r, magnitude)
        pairs_14 = system.pairs_14.array
        if len(pairs_14):
            d14, r14, a14_i, a14_j = _pair_geometry(system, coords, jnp.asarray(pairs_14), None)
            magnitude_14 = inter.weight_14 * inter.pair_force(r14, a14_i, a14_j)  # no cutoff, as potential_14
            forces = _add_pair_forces(forces, jnp.asarray(pairs_14), d14, r14, magnitude_14)
    for inter in system.specific_inters:
        if inter.has_energy or not inter.n_terms:
            continue
        index = jnp.asarray(inter.indices.array)
        term_forces = inter.force(coords[index], system.boundary)
        if term_forces.shape != index.shape + (coords.shape[1],):
            raise ValueError(
                f"{type(inter).__name__}.force returned shape {term_forces.shape}, "
                f"expected {index.shape + (coords.shape[1],)}"
            )
        forces = forces.at[index.reshape(-1)].add(term_forces.reshape(-1, coords.shape[1]))
    return forces


def has_force_only(system) -> bool:
    return any(not inter.has_energy for inter in system.pairwise_inters + system.specific_inters)


def energy_and_forces(system, coords: Array | None = None, neighbors: NeighborList | None = None):
    """(potential energy, forces (N, D)); forces = −∇E plus any force-only interactions."""
    coords = system.coords if coords is None else coords
    energy, gradient = jax.value_and_grad(potential_energy, argnums=1)(system, coords, neighbors)
    forces = -gradient
    if has_force_only(system):
        forces = forces + _force_only(system, coords, neighbors)
    return energy, forces


def forces(system, coords: Array | None = None, neighbors: NeighborList | None = None) -> Array:
    """Forces (N, D), energy/length units."""
    return energy_and_forces(system, coords, neighbors)[1]


def kinetic_energy(masses: Array, velocities: Array) -> Array:
    """½ Σ m v² (energy units), in the dtype of the velocities."""
    return 0.5 * jnp.sum(masses.astype(velocities.dtype)[:, None] * velocities**2)


def temperature(masses: Array, velocities: Array, boltzmann: float, n_dof: int | None = None) -> Array:
    """Instantaneous temperature 2K / (n_dof k_B); n_dof defaults to N·D (no constraints)."""
    n_dof = velocities.size if n_dof is None else n_dof
    return 2.0 * kinetic_energy(masses, velocities) / (n_dof * boltzmann)


__all__ = ["potential_energy", "energy_and_forces", "forces", "kinetic_energy", "temperature", "safe_norm"]
