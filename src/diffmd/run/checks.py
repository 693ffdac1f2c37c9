"""What can go wrong in a run, found and named: bad inputs (eager or traced), neighbor-list
overflow and blow-ups."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..space.boundaries import RectangularBoundary


class SimulationError(RuntimeError):
    """A simulation could not produce a trustworthy result (blow-up, list overflow, bad input)."""


def is_typed_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def error_if(tree, pred, message: str):
    """`eqx.error_if` on every leaf but typed PRNG keys (jax.random.key), which it cannot carry."""
    keys, rest = eqx.partition(tree, is_typed_key)
    return eqx.combine(keys, eqx.error_if(rest, pred, message))


def checked_inputs(system):
    """The system with its values checked inside the compiled run (traced masses, parameters
    and box sides get the checks eager ones get when the System is built): a non-positive or
    non-finite mass, a NaN parameter, or a box side below twice the largest cutoff raises an
    error naming the cause, before a step is taken."""
    atoms = system.atoms
    coords = system.coords
    for name in atoms.names:
        raw = atoms.per_atom.get(name, atoms.per_type.get(name))
        if name == "mass":
            coords = eqx.error_if(coords, ~jnp.all((raw > 0) & jnp.isfinite(raw)),
                                  "Atoms: mass must be positive and finite (a traced mass is not)")
        else:
            coords = eqx.error_if(coords, jnp.any(jnp.isnan(raw)), f"Atoms: {name} contains NaN")
    coords = eqx.error_if(coords, ~jnp.all(jnp.isfinite(system.velocities)), "System: velocities contain NaN or inf")
    coords = eqx.error_if(coords, ~jnp.all(jnp.isfinite(coords)), "System: coords contain NaN or inf")
    cutoff = system.largest_cutoff()
    if isinstance(system.boundary, RectangularBoundary) and cutoff > 0:
        sides = system.boundary.sides
        coords = eqx.error_if(
            coords, ~jnp.all(sides >= 2 * cutoff),
            f"box side below twice the largest cutoff ({cutoff}): the minimum-image convention would miss "
            "interactions (a traced box is checked when the run starts)")
    return eqx.tree_at(lambda s: s.coords, system, coords)


def blow_up_message(step, integrator) -> str:
    where = f"step {step}" if isinstance(step, int) else "some step"
    return (
        f"simulation blew up: coordinates or velocities became NaN/inf (or coordinates exceeded 1e12) at {where}. "
        f"Reduce the time step (dt = {getattr(integrator, 'dt', '?')}), start from a configuration "
        "without overlaps (random_coords(..., min_distance=...)), or cap the force (LennardJones(force_cap=...))"
    )


OVERFLOW_MESSAGE = (
    "neighbor list overflow: more pairs within the cutoff than the list capacity. Inside "
    "jit/grad the list cannot be reallocated: give the finder a larger capacity "
    "(DistanceNeighborFinder(..., capacity=n)) or run once eagerly to size it (a cell list also "
    "overflows when a cell holds more atoms than it has slots)"
)


def traced_checks(trajectory):
    """Overflow and blow-up raised from inside compiled code."""
    neighbors = trajectory.state.neighbors
    if neighbors is not None:
        trajectory = error_if(trajectory, neighbors.overflowed, OVERFLOW_MESSAGE)
    return error_if(trajectory, trajectory.state.first_nonfinite_step >= 0, blow_up_message(None, None))


def eager_checks(trajectory, integrator, reallocations: int) -> None:
    neighbors = trajectory.state.neighbors
    if neighbors is not None and bool(neighbors.overflowed):
        raise SimulationError(f"neighbor list overflow persisted after {reallocations} reallocations")
    bad_step = int(trajectory.state.first_nonfinite_step)
    if bad_step >= 0:
        raise SimulationError(blow_up_message(bad_step, integrator))


def check_arguments(n_steps, integrator, key) -> None:
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"simulate: n_steps must be a non-negative integer, got {n_steps!r}")
    if integrator.needs_any_key and key is None:
        raise ValueError("simulate: the integrator or a coupling needs random numbers; pass key=jax.random.key(seed)")
