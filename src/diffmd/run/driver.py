"""The step driver: what every integrator needs, done once for all of them.

`force_function` evaluates energy and forces at new coordinates, updating the neighbor list
first (rebuilt when an atom has moved half the skin, or on the finder's schedule, decided
inside the compiled loop). `step_function` wraps an integrator's pure (x, v) update with the
rest of a step: the step counter, PRNG keys for the integrator and its couplings, the
couplings themselves, centre-of-mass motion removal, and blow-up tracking.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..dynamics.constraints import NoConstraints
from ..dynamics.integrators import StepContext
from ..dynamics.state import ForceEval, MDState
from ..energy import energy_and_forces
from ..neighbors import Capacity, NeighborList

EXPLODED_COORDINATE = 1e12  # |x| beyond this (length units) counts as a blow-up


def list_builder(system, capacity: Capacity | None):
    """build(coords, previous=None, boundary=None) -> NeighborList with this run's finder and
    capacity (in the System's box unless another is given)."""
    excluded = system.excluded_pairs().array

    def build(coords, previous=None, boundary=None):
        boundary = jax.lax.stop_gradient(system.boundary if boundary is None else boundary)  # lists carry no derivative
        return system.neighbor_finder.build(coords, boundary, excluded, capacity, previous)

    return build


def in_box(system, boundary):
    """`system` with its box replaced (the box a barostat has moved to), or itself."""
    return system if boundary is None or boundary is system.boundary else eqx.tree_at(lambda s: s.boundary, system, boundary)


def force_function(system, capacity: Capacity | None, derivatives: str = "reverse", replay: bool = False):
    """force_fn(coords, neighbors, step, boundary=None) -> ForceEval (energy, forces, the list
    they used), in `boundary` (default the System's box).

    `replay`: the list given is the one this step used (a backward pass replaying the step),
    so it is used as it is, with no displacement check or rebuild."""
    finder = system.neighbor_finder
    uses_list = system.uses_neighbor_list()
    build = list_builder(system, capacity)
    half_skin = system.neighbor_skin() / 2 if uses_list else 0.0

    def update(coords, neighbors: NeighborList | None, step, boundary):
        if not uses_list:
            return None
        if replay:
            return neighbors
        # Lists carry no derivative: cutting the coordinates (and box) before the rebuild loop
        # keeps it out of the differentiated program.
        coords = jax.lax.stop_gradient(coords)
        if neighbors is None:
            return build(coords, None, boundary)
        moved = jax.lax.stop_gradient(boundary).vector(neighbors.reference_coords, coords)
        rebuild = jnp.max(jnp.sum(moved * moved, axis=-1)) > half_skin**2
        if finder.every is not None:
            rebuild = rebuild | (step % finder.every == 0)
        return rebuilt_if(rebuild, lambda previous: build(coords, previous, boundary), neighbors)

    def force_fn(coords, neighbors, step, boundary=None) -> ForceEval:
        boundary = system.boundary if boundary is None else boundary
        neighbors = update(coords, neighbors, step, boundary)
        energy, forces = energy_and_forces(in_box(system, boundary), coords, neighbors, derivatives=derivatives)
        return ForceEval(energy, forces.astype(coords.dtype), neighbors)

    return force_fn


def rebuilt_if(rebuild, build, neighbors: NeighborList) -> NeighborList:
    """`build(neighbors)` where `rebuild`, else `neighbors`: a loop run once or not at all,
    rather than a cond. XLA updates a loop's carry in place, where a cond copied the (N, K)
    rows on every step that kept them (15 % of a step at N = 1000); and under vmap it builds
    only when some replica needs a build, where a cond became a select that built every
    replica's list every step."""

    def build_once(carry):
        return jnp.zeros((), bool), build(carry[1])

    return jax.lax.while_loop(lambda carry: carry[0], build_once, (rebuild, neighbors))[1]


def trial_function(system, capacity: Capacity | None, derivatives: str):
    """trial(coords, boundary) -> (energy, forces, (most neighbors, most per cell)):
    a barostat's trial evaluation with a list built afresh in the trial box (the list itself
    is dropped: the driver rebuilds it only if the move is accepted)."""
    build = list_builder(system, capacity)

    def trial(coords, boundary):
        neighbors = build(jax.lax.stop_gradient(coords), None, boundary) if system.uses_neighbor_list() else None
        energy, forces = energy_and_forces(in_box(system, boundary), coords, neighbors, derivatives=derivatives)
        counts = (jnp.int32(0), jnp.int32(0)) if neighbors is None else (neighbors.max_count, neighbors.max_cell_count)
        return energy.astype(coords.dtype), forces.astype(coords.dtype), counts

    return trial


def moves_box(integrator) -> bool:
    """Whether one of the integrator's couplings changes the box (a barostat)."""
    return any(getattr(c, "moves_box", False) for c in integrator.coupling)


def coupling_states(system, integrator, boundary) -> tuple:
    """The couplings' own state at the start of a run (None for those that keep none)."""
    return tuple(c.initial_state(system, boundary) if hasattr(c, "initial_state") else None for c in integrator.coupling)


def initial_state(system, force_fn, key, integrator) -> MDState:
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
                   neighbors=first.neighbors, first_nonfinite_step=jnp.int32(-1),
                   boundary=system.boundary if moves_box(integrator) else None,
                   couplings=coupling_states(system, integrator, system.boundary),
                   integrator_state=integrator.initial_state(system))


def remove_com_velocity(velocities, masses, frozen=None):
    """Velocities with the centre-of-mass velocity Σ m v / Σ m subtracted (over the atoms that
    move: `frozen` (N,) marks atoms that never do, whose velocities stay zero)."""
    m = masses.astype(velocities.dtype)[:, None]
    if frozen is not None:
        m = jnp.where(jnp.asarray(frozen)[:, None], 0.0, m)
    shifted = velocities - jnp.sum(m * velocities, axis=0) / jnp.sum(m)
    return shifted if frozen is None else jnp.where(jnp.asarray(frozen)[:, None], velocities, shifted)


def step_function(system, integrator, force_fn, capacity: Capacity | None = None, derivatives: str = "reverse"):
    """step(state) -> state: one step of `integrator` with everything around it. `capacity`
    and `derivatives` (those of `force_fn`) serve a barostat's trial evaluations."""
    constrained = not isinstance(system.constraints, NoConstraints)
    build = list_builder(system, capacity)
    trial = trial_function(system, capacity, derivatives) if moves_box(integrator) else None

    def step(state: MDState) -> MDState:
        number = state.step + 1
        dtype = state.coords.dtype
        box = state.box(system)
        inv_mass = (1.0 / system.atoms.mass).astype(dtype)[:, None]
        key, integrator_key = state.key, None
        if integrator.needs_key:
            key, integrator_key = jax.random.split(key)
        ctx = StepContext(inv_mass, system.constraints, box, integrator_key, system.units.boltzmann,
                          system.degrees_of_freedom)
        current = ForceEval(state.potential_energy, state.forces, state.neighbors)
        x, v, new, own = integrator.advance(state.coords, state.velocities, current,
                                            lambda coords: force_fn(coords, state.neighbors, number, box), ctx,
                                            state.integrator_state)
        dt = jnp.asarray(integrator.dt, dtype)
        energy, forces, neighbors, own_states = new.energy, new.forces, new.neighbors, list(state.couplings)
        for index, coupling in enumerate(integrator.coupling):
            sub = None
            if coupling.needs_key:
                key, sub = jax.random.split(key)
            if getattr(coupling, "moves_box", False):
                move = coupling.update(number, x, energy, forces, box, own_states[index], sub, system, trial)
                x, box, energy, forces, own_states[index] = move.coords, move.boundary, move.energy, move.forces, move.own
                if neighbors is not None:
                    neighbors = _after_box_move(neighbors, move, build)
            else:
                v = coupling.apply(v, system, dt, sub)
        if constrained and integrator.coupling:  # couplings may break the constraints (Andersen)
            v = system.constraints.velocities(x, v, inv_mass, box)
        if system.remove_com_motion:
            v = remove_com_velocity(v, system.atoms.mass, system.constraints.frozen(system.n_atoms))
        # NaN/inf, or coordinates flung beyond any physical scale (in open space a blow-up
        # can stay finite: atoms fly off to 1e17).
        finite = jnp.all(jnp.abs(x) < EXPLODED_COORDINATE) & jnp.all(jnp.isfinite(v))
        first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, number, state.first_nonfinite_step)
        return MDState(x, v, forces, energy, number, key, neighbors, first_bad,
                       None if state.boundary is None else box, tuple(own_states), own)

    return step


def _after_box_move(neighbors: NeighborList, move, build) -> NeighborList:
    """The list after a barostat's trial: its counts include the trial's (an overflowing trial
    marks the run for reallocation), and an accepted move rebuilds it in the new box."""
    counted = eqx.tree_at(lambda n: (n.max_count, n.max_cell_count), neighbors,
                          (jnp.maximum(neighbors.max_count, move.trial_counts[0]),
                           jnp.maximum(neighbors.max_cell_count, move.trial_counts[1])))
    coords = jax.lax.stop_gradient(move.coords)
    return rebuilt_if(move.accepted, lambda previous: build(coords, previous, move.boundary), counted)
