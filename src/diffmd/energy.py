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
    total = total + _specific_energy(system, coords)
    return total.astype(coords.dtype)


def _add_pair_forces(forces, pairs, d, r, magnitude):
    """Scatter pair forces of the given magnitude (positive = repulsive) along i→j."""
    safe_r = jnp.where(r > 0, r, 1.0)
    f_j = ((magnitude / safe_r)[:, None] * d).astype(forces.dtype)  # repulsive: pushes j away from i
    return forces.at[pairs[:, 1]].add(f_j).at[pairs[:, 0]].add(-f_j)


def _radial(energy_fn, r):
    """Per-pair energies V(r) and radial forces −dV/dr, elementwise (forward mode: no gathers
    or scatters are differentiated, so later derivatives of the force stay cheap)."""
    energy, slope = jax.jvp(energy_fn, (r,), (jnp.ones_like(r),))
    return energy, -slope


def _pairwise(system, coords, neighbors):
    """Energy and forces of the pairwise interactions, forces computed pair by pair."""
    energy = jnp.zeros((), coords.dtype)
    forces = jnp.zeros_like(coords)
    pairs_14 = jnp.asarray(system.pairs_14.array)
    for inter in system.pairwise_inters:
        pairs, mask = _pair_sets(system, inter, neighbors)
        d, r, atoms_i, atoms_j = _pair_geometry(system, coords, pairs, mask)
        if inter.has_energy:
            pair_energy, magnitude = _radial(lambda rr: inter.pair_energy(rr, atoms_i, atoms_j), r)
            energy = energy + _masked_sum(pair_energy, mask)
        else:
            magnitude = inter.capped_pair_force(r, atoms_i, atoms_j)
        if mask is not None:
            magnitude = jnp.where(mask, magnitude, 0.0)
        forces = _add_pair_forces(forces, pairs, d, r, magnitude)
        if len(pairs_14):  # 1-4 pairs: weight_14 × the raw potential (or force), no cutoff
            d14, r14, a14_i, a14_j = _pair_geometry(system, coords, pairs_14, None)
            if inter.has_energy:
                e14, magnitude_14 = _radial(lambda rr: inter.weight_14 * inter.potential_14(rr, a14_i, a14_j), r14)
                energy = energy + jnp.sum(e14)
            else:
                magnitude_14 = inter.weight_14 * inter.pair_force(r14, a14_i, a14_j)
            forces = _add_pair_forces(forces, pairs_14, d14, r14, magnitude_14)
    return energy, forces


def _specific_energy(system, coords):
    total = jnp.zeros((), coords.dtype)
    for inter in system.specific_inters:
        if inter.has_energy and inter.n_terms:
            positions = coords[jnp.asarray(inter.indices.array)]
            total = total + jnp.sum(inter.energy(positions, system.boundary))
    return total


def _specific_force_only(system, coords):
    forces = jnp.zeros_like(coords)
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
        forces = forces.at[index.reshape(-1)].add(term_forces.reshape(-1, coords.shape[1]).astype(forces.dtype))
    return forces


def energy_and_forces(system, coords: Array | None = None, neighbors: NeighborList | None = None):
    """(potential energy, forces (N, D)).

    Pairwise forces are computed pair by pair from −dV/dr (exactly −∇E of the pairwise
    energy); bonded forces by autodiff of the bonded energy; force-only interactions add their
    forces. The energy covers the energy-based interactions only.
    """
    coords = system.coords if coords is None else coords
    energy, forces = _pairwise(system, coords, neighbors)
    if any(inter.has_energy and inter.n_terms for inter in system.specific_inters):
        bonded, gradient = jax.value_and_grad(_specific_energy, argnums=1)(system, coords)
        energy, forces = energy + bonded, forces - gradient.astype(forces.dtype)
    if any(not inter.has_energy for inter in system.specific_inters):
        forces = forces + _specific_force_only(system, coords)
    return energy.astype(coords.dtype), forces


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
