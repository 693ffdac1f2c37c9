"""The step driver: what every integrator needs, done once for all of them.

`force_function` evaluates energy and forces at new coordinates, updating the neighbor list
first (rebuilt when an atom has moved half the skin, or on the finder's schedule, decided
inside the compiled loop). `step_function` wraps an integrator's pure (x, v) update with the
rest of a step: the step counter, PRNG keys for the integrator and its couplings, the
couplings themselves, centre-of-mass motion removal, and blow-up tracking.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..dynamics.constraints import NoConstraints
from ..dynamics.integrators import StepContext
from ..dynamics.state import ForceEval, MDState
from ..energy import energy_and_forces
from ..neighbors import Capacity, NeighborList

EXPLODED_COORDINATE = 1e12  # |x| beyond this (length units) counts as a blow-up


def list_builder(system, capacity: Capacity | None):
    """build(coords, previous=None) -> NeighborList with this run's finder and capacity."""
    excluded = system.excluded_pairs().array
    boundary = jax.lax.stop_gradient(system.boundary)  # lists carry no derivative
    return lambda coords, previous=None: system.neighbor_finder.build(coords, boundary, excluded, capacity, previous)


def force_function(system, capacity: Capacity | None, derivatives: str = "reverse", replay: bool = False):
    """force_fn(coords, neighbors, step) -> ForceEval (energy, forces, the list they used).

    `replay`: the list given is the one this step used (a backward pass replaying the step),
    so it is used as it is, with no displacement check or rebuild."""
    finder = system.neighbor_finder
    uses_list = system.uses_neighbor_list()
    build = list_builder(system, capacity)
    half_skin = system.neighbor_skin() / 2 if uses_list else 0.0

    def update(coords, neighbors: NeighborList | None, step):
        if not uses_list:
            return None
        if replay:
            return neighbors
        # Lists carry no derivative: cutting the coordinates (and box, in the builder) before
        # the rebuild loop keeps it out of the differentiated program.
        coords = jax.lax.stop_gradient(coords)
        if neighbors is None:
            return build(coords)
        moved = system.boundary.vector(neighbors.reference_coords, coords)
        rebuild = jnp.max(jnp.sum(moved * moved, axis=-1)) > half_skin**2
        if finder.every is not None:
            rebuild = rebuild | (step % finder.every == 0)

        # A loop run once or not at all, rather than a cond: XLA updates a loop's carry in
        # place, where a cond copied the (N, K) rows on every step that kept them (15 % of a
        # step at N = 1000); and under vmap it builds only when some replica needs a build,
        # where a cond became a select that built every replica's list every step.
        def build_once(carry):
            return jnp.zeros((), bool), build(coords, carry[1])

        return jax.lax.while_loop(lambda carry: carry[0], build_once, (rebuild, neighbors))[1]

    def force_fn(coords, neighbors, step) -> ForceEval:
        neighbors = update(coords, neighbors, step)
        energy, forces = energy_and_forces(system, coords, neighbors, derivatives=derivatives)
        return ForceEval(energy, forces.astype(coords.dtype), neighbors)

    return force_fn


def initial_state(system, force_fn, key) -> MDState:
    """The state at step 0: the system's coordinates and velocities put on its constraints
    (as OpenMM does when a run starts), and the forces there."""
    coords, velocities = system.coords, system.velocities.astype(system.coords.dtype)
    if not isinstance(system.constraints, NoConstraints):
        inv_mass = (1.0 / system.atoms.mass).astype(coords.dtype)[:, None]
        coords = system.constraints.positions(coords, coords, inv_mass, system.boundary)
        velocities = system.constraints.velocities(coords, velocities, inv_mass, system.boundary)
    first = force_fn(coords, None, jnp.int32(0))
    return MDState(coords=coords, velocities=velocities,
                   forces=first.forces, potential_energy=first.energy, step=jnp.int32(0), key=key,
                   neighbors=first.neighbors, first_nonfinite_step=jnp.int32(-1))


def remove_com_velocity(velocities, masses, frozen=None):
    """Velocities with the centre-of-mass velocity Σ m v / Σ m subtracted (over the atoms that
    move: `frozen` (N,) marks atoms that never do, whose velocities stay zero)."""
    m = masses.astype(velocities.dtype)[:, None]
    if frozen is not None:
        m = jnp.where(jnp.asarray(frozen)[:, None], 0.0, m)
    shifted = velocities - jnp.sum(m * velocities, axis=0) / jnp.sum(m)
    return shifted if frozen is None else jnp.where(jnp.asarray(frozen)[:, None], velocities, shifted)


def step_function(system, integrator, force_fn):
    """step(state) -> state: one step of `integrator` with everything around it."""
    constrained = not isinstance(system.constraints, NoConstraints)

    def step(state: MDState) -> MDState:
        number = state.step + 1
        dtype = state.coords.dtype
        inv_mass = (1.0 / system.atoms.mass).astype(dtype)[:, None]
        key, integrator_key = state.key, None
        if integrator.needs_key:
            key, integrator_key = jax.random.split(key)
        ctx = StepContext(inv_mass, system.constraints, system.boundary, integrator_key, system.units.boltzmann)
        current = ForceEval(state.potential_energy, state.forces, state.neighbors)
        x, v, new = integrator.update(state.coords, state.velocities, current,
                                      lambda coords: force_fn(coords, state.neighbors, number), ctx)
        dt = jnp.asarray(integrator.dt, dtype)
        for coupling in integrator.coupling:
            sub = None
            if coupling.needs_key:
                key, sub = jax.random.split(key)
            v = coupling.apply(v, system, dt, sub)
        if constrained and integrator.coupling:  # couplings may break the constraints (Andersen)
            v = system.constraints.velocities(x, v, inv_mass, system.boundary)
        if system.remove_com_motion:
            v = remove_com_velocity(v, system.atoms.mass, system.constraints.frozen(system.n_atoms))
        # NaN/inf, or coordinates flung beyond any physical scale (in open space a blow-up
        # can stay finite: atoms fly off to 1e17).
        finite = jnp.all(jnp.abs(x) < EXPLODED_COORDINATE) & jnp.all(jnp.isfinite(v))
        first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, number, state.first_nonfinite_step)
        return MDState(x, v, new.forces, new.energy, number, key, new.neighbors, first_bad)

    return step
