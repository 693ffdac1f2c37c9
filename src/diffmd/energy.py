"""Potential energy and forces of a `System` at given coordinates.

Pairwise interactions are evaluated over dense neighbor rows: row i of an (N, K) index array
lists the neighbors of atom i (every pair appears in both rows), coordinates are gathered
component by component (structure-of-arrays, which vectorises on CPUs), and the force on atom
i is the row sum of −dV/dr · d/r — exactly −∇E. No scatter-add is needed.

For reverse mode the pair kernel has a custom VJP that uses the same gathers: the Hessian of
a pair potential is symmetric and every pair appears in both rows, so the cotangent of the
coordinates (and of per-atom parameters) is a row sum of terms in (λ_i − λ_j) — see
`_pair_rows_bwd`. That avoids the scatter-adds plain autodiff would produce, and the backward
pass stores only the kernel's inputs. Forward mode (jvp) uses the plain kernel.

Bonded terms and 1-4 pairs are small, fixed sets: their forces come from autodiff of their
energy (or from their own force for force-only interactions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from . import native
from .interactions.geometry import safe_norm
from .neighbors import NeighborList, all_neighbors_array


def _gather(atoms, index):
    return jax.tree_util.tree_map(lambda a: a[index], atoms)


def _pair_geometry(system, coords, pairs):
    """Vectors i→j, NaN-safe distances and the atoms of each side, for an explicit (P, 2) list."""
    i, j = pairs[:, 0], pairs[:, 1]
    d = system.boundary.vector(coords[i], coords[j])
    return d, safe_norm(d), _gather(system.atoms, i), _gather(system.atoms, j)


def _radial(energy_fn, r):
    """Per-pair energies V(r) and radial forces −dV/dr, elementwise (forward mode: no gathers
    or scatters are differentiated, so later derivatives of the force stay cheap)."""
    energy, slope = jax.jvp(energy_fn, (r,), (jnp.ones_like(r),))
    return energy, -slope


def _pair_scale(inter, atoms_j):
    """Per-pair (V(r), s(r)) with the force on the row atom f = s·d (d = x_j − x_i):
    s = V'(r)/r, or −F(r)/r for force-only interactions (V = 0). Elementwise in r; the forward
    kernel, its forward-mode derivative and the custom reverse pass all use it."""

    def fn(r, atoms_i, inter):
        safe_r = jnp.where(r > 0, r, 1.0)  # coincident atoms: no force, and no NaN in derivatives
        if inter.has_energy:
            energy, slope = jax.jvp(lambda rr: inter.pair_energy(rr, atoms_i, atoms_j), (r,), (jnp.ones_like(r),))
            return energy, slope / safe_r
        return jnp.zeros_like(r), -inter.capped_pair_force(r, atoms_i, atoms_j) / safe_r

    return fn


def _row_terms(inter, xi, xj, valid, boundary, atoms_i, atoms_j):
    """Pair energies V (N, K) and forces on the row atom (D, N, K) for dense neighbor rows.

    xi: (D, N, 1) row atoms' coordinates, xj: (D, N, K) their neighbors', valid: (N, K).
    Coincident or padded pairs get a zero-gradient distance (no NaN anywhere).
    """
    d = boundary.vector_components(xi, xj)
    r2 = jnp.sum(d * d, axis=0)
    positive = r2 > 0
    r = jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)  # coincident: 0, zero gradient
    r = jnp.where(valid, r, 1.0)  # padding slots: a harmless distance, masked below
    energy, scale = _pair_scale(inter, atoms_j)(r, atoms_i, inter)
    # Force on the row atom i: s·d with d = x_j − x_i (repulsion pushes i away).
    return jnp.where(valid, energy, 0.0), jnp.where(valid & positive, scale, 0.0)[None] * d


def _rows(x, atoms, idx):
    n = x.shape[0]
    valid = idx < n
    safe_idx = jnp.where(valid, idx, 0)
    x_t = x.T
    atoms_i = jax.tree_util.tree_map(lambda a: a[:, None], atoms)
    return x_t[:, :, None], x_t[:, safe_idx], valid, safe_idx, atoms_i, _gather(atoms, safe_idx)


def _pair_rows_plain(x, boundary, atoms, inter, idx):
    """(energy, forces (N, D)) of one pairwise interaction over dense neighbor rows."""
    xi, xj, valid, _, atoms_i, atoms_j = _rows(x, atoms, idx)
    energy, f = _row_terms(inter, xi, xj, valid, boundary, atoms_i, atoms_j)
    return 0.5 * jnp.sum(energy), jnp.sum(f, axis=2).T.astype(x.dtype)


@jax.custom_vjp
def _pair_rows(x, boundary, atoms, inter, idx):
    return _pair_rows_plain(x, boundary, atoms, inter, idx)


def _pair_rows_fwd(x, boundary, atoms, inter, idx):
    return _pair_rows_plain(x, boundary, atoms, inter, idx), (x, boundary, atoms, inter, idx)


def _pair_rows_bwd(residuals, cotangents):
    """Reverse pass by row sums. With E = ½ Σ_i Σ_j V_ij and F_i = Σ_j f_ij, and every pair in
    both rows (V_ij = V_ji, f_ij = −f_ji), differentiating each row only through its own atom
    (x_i, atoms_i) with cotangents (Ē, μ = λ_i − λ_j) gives the exact cotangents of x and of the
    per-atom parameters; parameters shared by all pairs (box, interaction) get half of it.

    Per pair the row's contribution is ℒ = Ē·V(r) + (μ·d)·s(r), so
    ∂ℒ/∂d = s·μ + (Ē V' + (μ·d) s') d/r  and  x̄_i = −Σ_j ∂ℒ/∂d.
    V', s' and the parameter cotangents come from one elementwise VJP of (V, s)(r, θ): no
    autodiff through gathers, and no second pass over the pair geometry.
    """
    x, boundary, atoms, inter, idx = residuals
    e_bar, f_bar = cotangents
    xi, xj, valid, safe_idx, atoms_i, atoms_j = _rows(x, atoms, idx)
    d = boundary.vector_components(xi, xj)
    r2 = jnp.sum(d * d, axis=0)
    ok = valid & (r2 > 0)
    r = jnp.sqrt(jnp.where(ok, r2, 1.0))
    lam = f_bar.T.astype(x.dtype)
    mu = jnp.where(ok[None], lam[:, :, None] - lam[:, safe_idx], 0.0)
    mu_d = jnp.sum(mu * d, axis=0)
    (_, scale), vjp = jax.vjp(_pair_scale(inter, atoms_j), r, atoms_i, inter)
    okf = ok.astype(r.dtype)
    r_bar, atoms_i_bar, inter_bar = vjp((okf * jnp.asarray(e_bar, r.dtype), okf * mu_d))
    d_bar = jnp.where(ok[None], scale * mu + (r_bar / r) * d, 0.0)
    _, box_vjp = jax.vjp(lambda b: b.vector_components(xi, xj), boundary)
    (boundary_bar,) = box_vjp(d_bar)
    half = lambda tree: jax.tree_util.tree_map(lambda g: 0.5 * g if jnp.issubdtype(g.dtype, jnp.inexact) else g, tree)
    x_bar = -jnp.sum(d_bar, axis=2).T.astype(x.dtype)
    return (x_bar, half(boundary_bar), jax.tree_util.tree_map(lambda g: g[:, 0], atoms_i_bar), half(inter_bar), None)


_pair_rows.defvjp(_pair_rows_fwd, _pair_rows_bwd)


def _neighbor_rows(system, inter, neighbors: NeighborList | None):
    """(N, K) neighbor rows an interaction sums over: the neighbor list, or all other atoms."""
    if getattr(inter, "use_neighbors", False) and neighbors is not None:
        return neighbors.idx
    return all_neighbors_array(system.n_atoms, system.excluded_pairs())


DERIVATIVES = ("any", "reverse", "forward")


def _pair_kernel(system, coords, inter, idx, derivatives: str):
    """(energy, forces) of one pairwise interaction with the kernel suited to `derivatives`:
    the compiled Lennard-Jones kernel where it applies (reverse or forward mode), else the
    pure-JAX kernel with its custom reverse pass ("reverse") or plain autodiff."""
    config = native.lj_config(inter, system.boundary, coords) if derivatives != "any" else None
    if config is not None:
        return native.lj_rows(derivatives, config, coords, system.atoms, system.boundary, idx)
    kernel = _pair_rows if derivatives == "reverse" else _pair_rows_plain
    return kernel(coords, system.boundary, system.atoms, inter, idx)


def _pairwise(system, coords, neighbors, derivatives: str):
    """Energy and forces of the pairwise interactions (plus their 1-4 pairs)."""
    energy = jnp.zeros((), coords.dtype)
    forces = jnp.zeros_like(coords)
    pairs_14 = jnp.asarray(system.pairs_14.array)
    for inter in system.pairwise_inters:
        e, f = _pair_kernel(system, coords, inter, _neighbor_rows(system, inter, neighbors), derivatives)
        energy, forces = energy + e, forces + f
        if len(pairs_14):  # 1-4 pairs: weight_14 × the raw potential (or force), no cutoff
            d14, r14, a14_i, a14_j = _pair_geometry(system, coords, pairs_14)
            if inter.has_energy:
                e14, magnitude_14 = _radial(lambda rr: inter.weight_14 * inter.potential_14(rr, a14_i, a14_j), r14)
                energy = energy + jnp.sum(e14)
            else:
                magnitude_14 = inter.weight_14 * inter.pair_force(r14, a14_i, a14_j)
            forces = _add_pair_forces(forces, pairs_14, d14, r14, magnitude_14)
    return energy, forces


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
    pairs_14 = jnp.asarray(system.pairs_14.array)
    for inter in system.pairwise_inters:
        if not inter.has_energy:
            continue
        total = total + _pair_rows_plain(coords, system.boundary, system.atoms, inter,
                                         _neighbor_rows(system, inter, neighbors))[0]
        if len(pairs_14):
            _, r14, a14_i, a14_j = _pair_geometry(system, coords, pairs_14)
            total = total + inter.weight_14 * jnp.sum(inter.potential_14(r14, a14_i, a14_j))
    total = total + _specific_energy(system, coords)
    return total.astype(coords.dtype)


def _add_pair_forces(forces, pairs, d, r, magnitude):
    """Scatter pair forces of the given magnitude (positive = repulsive) along i→j."""
    safe_r = jnp.where(r > 0, r, 1.0)
    f_j = ((magnitude / safe_r)[:, None] * d).astype(forces.dtype)  # repulsive: pushes j away from i
    return forces.at[pairs[:, 1]].add(f_j).at[pairs[:, 0]].add(-f_j)


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


def energy_and_forces(system, coords: Array | None = None, neighbors: NeighborList | None = None, *,
                      derivatives: str = "any"):
    """(potential energy, forces (N, D)).

    Pairwise forces are row sums of −dV/dr·d/r (exactly −∇E of the pairwise energy); bonded
    forces come from autodiff of the bonded energy; force-only interactions add their forces.
    The energy covers the energy-based interactions only.

    `derivatives` picks the pair kernel for the derivatives that will be taken:
      * "any" (default): the pure-JAX kernel under plain autodiff; every transformation works.
      * "reverse": a gather-only custom reverse pass (compiled for Lennard-Jones, see
        `diffmd.native`); faster reverse mode, smaller memory; no jax.jvp through it.
      * "forward": the compiled Lennard-Jones kernel computes forces and their tangents in one
        pass; for jax.jvp / jax.jacfwd only (other interactions: plain autodiff).
    Values are the same in every case.
    """
    if derivatives not in DERIVATIVES:
        raise ValueError(f"energy_and_forces: derivatives must be one of {DERIVATIVES}, got {derivatives!r}")
    coords = system.coords if coords is None else coords
    energy, forces = _pairwise(system, coords, neighbors, derivatives)
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
