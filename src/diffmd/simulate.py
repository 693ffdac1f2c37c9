"""`simulate`: run a System forward with an integrator inside one compiled `lax.scan`."""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import concrete_or_none, is_traced
from .energy import energy_and_forces
from .integrators import MDState
from ._state_scan import state_scan
from .neighbors import NeighborList

MAX_REALLOCATIONS = 5
EAGER_CHUNK_STEPS = 1000
"""Eager runs with a neighbor list go in chunks of about this many steps (a multiple of every
logger's and the finder's interval): an overflow reruns only the chunk it happened in."""


class SimulationError(RuntimeError):
    """A simulation could not produce a trustworthy result (blow-up, list overflow, bad input)."""


class Trajectory(eqx.Module):
    """Result of `simulate`: the final state and the logged records (nothing is mutated).

    Attributes:
        state: final MDState (coords, velocities, forces, potential_energy, step, …).
        logs: dict logger name → records stacked along axis 0 (n_records, ...).
    """

    state: MDState
    logs: dict

    @property
    def coords(self) -> Array:
        """Final coordinates (N, D) — what the reference's `simulate!` returns."""
        return self.state.coords

    @property
    def velocities(self) -> Array:
        return self.state.velocities


def _list_builder(system, capacity):
    """build(coords, *previous_counts) -> NeighborList with this run's finder and capacity."""
    excluded = system.excluded_pairs().array
    boundary = jax.lax.stop_gradient(system.boundary)  # lists carry no derivative
    return lambda coords, *counts: system.neighbor_finder.build(coords, boundary, excluded, capacity, *counts)


def _force_fn(system, capacity: int | None, derivatives: str = "reverse", replay: bool = False):
    """Returns force_fn(coords, neighbors, step) -> (neighbors, energy, forces).

    `replay`: the list given is the one this step used (a backward pass replaying the step),
    so it is used as it is, with no displacement check or rebuild."""
    finder = system.neighbor_finder
    uses_list = system.uses_neighbor_list()
    build = _list_builder(system, capacity)
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
            return jnp.zeros((), bool), build(coords, carry[1].max_count, carry[1].max_cell_count)

        return jax.lax.while_loop(lambda carry: carry[0], build_once, (rebuild, neighbors))[1]

    def force_fn(coords, neighbors, step):
        neighbors = update(coords, neighbors, step)
        energy, forces = energy_and_forces(system, coords, neighbors, derivatives=derivatives)
        return neighbors, energy, forces

    return force_fn


def _initial_state(system, force_fn, key) -> MDState:
    neighbors, energy, forces = force_fn(system.coords, None, jnp.int32(0))
    return MDState(
        coords=system.coords,
        velocities=system.velocities.astype(system.coords.dtype),
        forces=forces.astype(system.coords.dtype),
        potential_energy=energy,
        step=jnp.int32(0),
        key=key,
        neighbors=neighbors,
        first_nonfinite_step=jnp.int32(-1),
    )


def _record_interval(loggers: dict) -> int:
    return reduce(math.gcd, (logger.every for logger in loggers.values()))


GRAD_MODES = ("reverse", "checkpointed", "forward")


def _segment_steps(n_steps: int, requested: int | None) -> int:
    """Steps per checkpointed segment: √T by default (memory O(√T) in the number of steps)."""
    if requested is not None:
        return max(1, int(requested))
    return max(1, math.isqrt(max(n_steps, 1) - 1) + 1)


class _Rows(NamedTuple):
    """What a reverse pass needs to run without storing neighbor rows (`_state_scan`)."""

    rebuild: Callable  # reference coords -> the rows a build from them gives
    replay: Callable  # the step, using the list it is given (no update): step(state, _)


def _scan(body, carry, length: int, mode: str, items_per_segment: int = 1, rows: _Rows | None = None):
    """`lax.scan(body, carry, None, length)` with the memory strategy of `mode`.

    "checkpointed": the items are grouped into segments of `items_per_segment`; only the carry
    at each segment boundary is kept for the backward pass and a segment is recomputed (with
    its intermediate values stored) when its turn comes. Outputs are stacked as usual.
    `rows` (scans over single steps with a neighbor list, no outputs): the stored
    intermediate states leave out the list's rows, which the backward pass restores
    (`_state_scan`), instead of storing 0.8 MB of rows per step at N = 1000.
    """
    if length == 0:
        return carry, None
    if rows is not None:
        plain = lambda c, n: (state_scan(lambda s: body(s, None)[0], lambda s: rows.replay(s, None)[0],  # noqa: E731
                                         c, n, rows.rebuild), None)
    else:
        plain = lambda c, n: jax.lax.scan(body, c, None, length=n)  # noqa: E731
    if mode != "checkpointed":
        return plain(carry, length)
    k = min(items_per_segment, length)
    n_segments, remainder = divmod(length, k)

    @jax.checkpoint
    def segment(c, _):
        return plain(c, k)

    carry, outs = jax.lax.scan(segment, carry, None, length=n_segments)
    if outs is not None:
        outs = jax.tree_util.tree_map(lambda o: o.reshape((n_segments * k,) + o.shape[2:]), outs)
    if remainder:
        carry, tail = jax.checkpoint(lambda c: plain(c, remainder))(carry)
        if outs is not None:
            outs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outs, tail)
    return carry, outs


def _restart(state: MDState, cut, force_fn) -> MDState:
    """Truncated backpropagation: where `cut`, the state's coordinates and velocities are cut
    from the gradient graph and the forces recomputed from the cut coordinates (so they still
    depend on the parameters); elsewhere the state is unchanged. `force_fn` uses the state's
    list as it is (it is valid for these coordinates). Only energy and forces go through the
    `cond`: a cond over the whole state copied its neighbor rows on every step."""
    coords, velocities = (jnp.where(cut, jax.lax.stop_gradient(a), a) for a in (state.coords, state.velocities))
    energy, forces = jax.lax.cond(cut, lambda: force_fn(coords, state.neighbors, state.step)[1:],
                                  lambda: (state.potential_energy, state.forces))
    return eqx.tree_at(lambda s: (s.coords, s.velocities, s.forces, s.potential_energy), state,
                       (coords, velocities, forces.astype(state.forces.dtype), energy.astype(state.potential_energy.dtype)))


def _continued_state(start: MDState, system, force_fn, capacity, key, derivatives: str,
                     keep_step: bool = False) -> MDState:
    """The state a continued run starts from: the previous run's coordinates, velocities and
    neighbor list (rebuilt only if its capacity changed), the step counter at 0. Forces are
    recomputed with this System, so they depend on its parameters (one force evaluation)."""
    neighbors = start.neighbors if system.uses_neighbor_list() else None
    if system.uses_neighbor_list() and (neighbors is None or system.neighbor_finder.capacity_of(neighbors) != capacity):
        neighbors, energy, forces = force_fn(start.coords, None, jnp.int32(0))
    else:
        energy, forces = energy_and_forces(system, start.coords, neighbors, derivatives=derivatives)
    step = start.step if keep_step else jnp.int32(0)
    return MDState(start.coords, start.velocities, forces.astype(start.coords.dtype), energy, step,
                   start.key if key is None else key, neighbors, jnp.int32(-1))


@eqx.filter_jit
def _run(system, integrator, n_steps: int, key, capacity: int | None, mode: str = "reverse",
         segment: int | None = None, backprop_window: int | None = None,
         backprop_steps: int | None = None, start: MDState | None = None, keep_step: bool = False) -> Trajectory:
    derivatives = "forward" if mode == "forward" else "reverse"  # the pair kernel for this mode
    force_fn = _force_fn(system, capacity, derivatives)
    if start is None:
        state = _initial_state(system, force_fn, key)
    else:
        state = _continued_state(start, system, force_fn, capacity, key, derivatives, keep_step)
    steps_per_segment = _segment_steps(n_steps, segment)
    detach_from = None if backprop_steps is None else n_steps - backprop_steps

    def make_step(force_fn):
        def step(state, _):
            # Truncation cuts the state *entering* a step, so a record or loss taken at a cut
            # point still sees the steps just before it.
            if backprop_window is not None or detach_from is not None:
                cut = jnp.zeros((), bool)
                if backprop_window is not None:
                    cut = cut | ((state.step % backprop_window == 0) & (state.step > 0))
                if detach_from is not None:
                    cut = cut | (state.step == detach_from)
                state = _restart(state, cut, list_as_is)
            return integrator.step(state, system, force_fn), None
        return step

    list_as_is = _force_fn(system, capacity, derivatives, replay=True)  # for restarts and replays
    step = make_step(force_fn)
    rows = None  # reverse modes with a list: the backward pass restores rows, replays steps
    if mode != "forward" and system.uses_neighbor_list():
        build = _list_builder(system, capacity)
        rows = _Rows(lambda reference: build(reference).idx, make_step(list_as_is))

    def advance(state, n):
        return _scan(step, state, n, mode, steps_per_segment, rows)[0]

    loggers = system.loggers
    if mode == "forward":
        return _run_forward(system, state, step, n_steps, loggers)
    if not loggers:
        return Trajectory(advance(state, n_steps), {})

    interval = _record_interval(loggers)
    n_blocks, remainder = divmod(n_steps, interval)

    def observe(logger, state):
        if logger.every == interval:
            return logger.observe(state, system)
        shape = jax.eval_shape(lambda s: logger.observe(s, system), state)
        zeros = lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        return jax.lax.cond(state.step % logger.every == 0, lambda: logger.observe(state, system), zeros)

    # Blocks of `interval` steps end with a record. Checkpointed: short blocks are grouped into
    # segments of about √T steps; a block longer than that is segmented inside instead.
    inner_mode = mode if interval > steps_per_segment else "reverse"

    def block(state, _):
        state = _scan(step, state, interval, inner_mode, steps_per_segment, rows)[0]
        return state, {name: observe(logger, state) for name, logger in loggers.items()}

    blocks_per_segment = max(1, steps_per_segment // interval)
    if n_blocks:
        state, records = _scan(block, state, n_blocks, mode, blocks_per_segment)
    else:
        shapes = {name: jax.eval_shape(lambda s, lg=logger: lg.observe(s, system), state) for name, logger in loggers.items()}
        records = {name: jax.tree_util.tree_map(lambda s: jnp.zeros((0,) + s.shape, s.dtype), shape) for name, shape in shapes.items()}
    stride = {name: logger.every // interval for name, logger in loggers.items()}
    logs = {
        name: jax.tree_util.tree_map(lambda r, k=stride[name]: r[k - 1 :: k], rec) for name, rec in records.items()
    }
    return Trajectory(advance(state, remainder), logs)


def _run_forward(system, state, step, n_steps, loggers) -> Trajectory:
    """Forward-mode run: a `while_loop` (no stored trajectory; reverse mode is refused by JAX)
    writing logger records into preallocated buffers."""
    shapes = {name: jax.eval_shape(lambda s, lg=logger: lg.observe(s, system), state) for name, logger in loggers.items()}
    counts = {name: n_steps // logger.every for name, logger in loggers.items()}
    buffers = {name: jax.tree_util.tree_map(lambda s, c=counts[name]: jnp.zeros((c,) + s.shape, s.dtype), shape)
               for name, shape in shapes.items()}

    def record(state, buffers):
        out = {}
        for name, logger in loggers.items():
            due = (state.step % logger.every == 0) & (counts[name] > 0)
            index = jnp.maximum(state.step // logger.every - 1, 0)

            def write(buf, logger=logger, index=index):
                value = logger.observe(state, system)
                return jax.tree_util.tree_map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, index, 0), buf, value)

            out[name] = jax.lax.cond(due, write, lambda buf: buf, buffers[name]) if counts[name] else buffers[name]
        return out

    def body(carry):
        state, buffers = carry
        state = step(state, None)[0]
        return state, record(state, buffers)

    state, buffers = jax.lax.while_loop(lambda c: c[0].step < n_steps, body, (state, buffers))
    return Trajectory(state, buffers)


def _choose_capacity(system):
    """The neighbor list's static capacity (the finder's own format; None without a list)."""
    if not system.uses_neighbor_list():
        return None
    finder = system.neighbor_finder
    # Constants closed over by an outer jit are concrete (ensure_compile_time_eval keeps them
    # so); under grad/jvp stop_gradient exposes the concrete primal values; values that are
    # really traced (jit/vmap arguments) cannot size a list, and the capacity must be given.
    with jax.ensure_compile_time_eval():
        boundary = jax.lax.stop_gradient(system.boundary)
        if finder.capacity is not None:
            return finder.given_capacity(system.n_atoms, boundary)
        coords = concrete_or_none(jax.lax.stop_gradient(system.coords))
        if coords is None or is_traced(boundary):
            raise SimulationError(
                "cannot size the neighbor list: the starting coordinates (or box) are traced. Give the finder a "
                f"capacity, e.g. {type(finder).__name__}(..., capacity=n) or finder.with_capacity(n)"
            )
        return finder.initial_capacity(coords, boundary, system.excluded_pairs().array)


def _check_inputs(system, integrator, n_steps, key):
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"simulate: n_steps must be a non-negative integer, got {n_steps!r}")
    if integrator.needs_key and key is None:
        raise ValueError("simulate: a coupling needs random numbers; pass key=jax.random.PRNGKey(seed)")


def simulate(system, integrator, n_steps: int, *, key=None, check: bool = True, grad_mode: str = "reverse",
             segment_length: int | None = None, backprop_window: int | None = None,
             backprop_steps: int | None = None, start: MDState | None = None) -> Trajectory:
    """Run `n_steps` of `integrator` from `system`'s coordinates and velocities.

    The whole run is one jitted `lax.scan` (compiled once per static configuration and cached);
    loggers run inside it. Nothing is mutated: the result holds the final state and the logs.
    Differentiable end to end with `jax.grad` / `jax.jvp` with respect to any float in
    `system` or `integrator`.

    Args:
        system: the System.
        integrator: e.g. VelocityVerlet(dt, coupling=FrictionThermostat(0.95)).
        n_steps: number of steps (static).
        key: PRNG key, needed by stochastic couplings (AndersenThermostat).
        check: raise SimulationError if coordinates become NaN/inf or the neighbor list
            overflows. Called eagerly, an overflowing list is reallocated and the affected
            stretch repeated: runs longer than EAGER_CHUNK_STEPS go in chunks, and only the
            chunk that overflowed is rerun. Inside jit/grad the error is raised from the
            compiled code.
        grad_mode: how gradients through the run are obtained; the values and gradients are
            the same in every mode, only cost and memory differ:
            * "reverse" — a plain scan; reverse mode stores every step's inputs (memory ∝ T).
              Fastest for short runs.
            * "checkpointed" — reverse mode with memory O(√T): only the state at segment
              boundaries is kept, and each segment is recomputed once in the backward pass.
            * "forward" — for `jax.jvp` / `jax.jacfwd`: a `while_loop` whose memory does not
              grow with T; JAX refuses reverse mode through it.
            The reverse modes give the pair kernel a custom, gather-only reverse pass (compiled
            for Lennard-Jones) and store states without neighbor rows; "forward" gives it a
            fused force-and-tangent pass. So forward-mode differentiation (jvp) needs
            grad_mode="forward", and reverse mode one of the others.
        segment_length: steps per checkpointed segment (default ⌈√T⌉).
        backprop_window: truncated backpropagation: the state is cut from the gradient graph
            every `backprop_window` steps (after steps w, 2w, …; forces are recomputed at the
            cut so they keep their parameter dependence), so the gradient of anything observed
            at step t flows back through steps t − (t mod w) … t only (through w steps at a cut
            point).
        backprop_steps: gradients flow only through the last `backprop_steps` steps.
        start: continue from a previous run's final state (`trajectory.state`) of the same
            System: its coordinates, velocities and neighbor list are reused (no rebuild),
            so a long run can be made in chunks; forces are recomputed with this System.
            `system.coords` / `velocities` are then ignored; the step counter starts again at
            0 (loggers and an `every` schedule count from the start of this call); `key`, if
            given, replaces the state's PRNG key.
    """
    _check_inputs(system, integrator, n_steps, key)
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"simulate: grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
    for name, value in (("segment_length", segment_length), ("backprop_window", backprop_window),
                        ("backprop_steps", backprop_steps)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"simulate: {name} must be a positive integer, got {value!r}")
    if backprop_steps is not None and backprop_steps > n_steps:
        backprop_steps = None  # the whole run
    n_steps = int(n_steps)
    if start is not None and not isinstance(start, MDState):
        raise TypeError(f"simulate: start must be the MDState of a previous run (trajectory.state), got {type(start).__name__}")
    if start is not None and start.coords.shape != system.coords.shape:
        raise ValueError(f"simulate: start has coordinates of shape {start.coords.shape}, the System {system.coords.shape}")
    capacity = (system.neighbor_finder.capacity_of(start.neighbors)
                if start is not None and start.neighbors is not None and system.uses_neighbor_list()
                else _choose_capacity(system))
    traced = is_traced((system, integrator, key, start)) or _under_jit()
    chunk = _chunk_steps(system)
    if not traced and system.uses_neighbor_list() and n_steps > chunk:
        return _simulate_in_chunks(system, integrator, n_steps, key, capacity, start, chunk, check)
    for _ in range(MAX_REALLOCATIONS + 1):
        trajectory = _run(system, integrator, n_steps, key, capacity, grad_mode, segment_length,
                          backprop_window, backprop_steps, start)
        neighbors = trajectory.state.neighbors
        traced = traced or is_traced(trajectory.state)
        if traced:
            break
        if neighbors is None or not bool(neighbors.overflowed):
            break
        capacity = system.neighbor_finder.grown_capacity(neighbors, capacity)
    if not check:
        return trajectory
    if traced:
        return _traced_checks(trajectory)
    _eager_checks(trajectory, integrator)
    return trajectory


def _under_jit() -> bool:
    """True while tracing for jit (a fresh computation is then a tracer)."""
    return isinstance(jnp.zeros(()) + 0, jax.core.Tracer)


def _chunk_steps(system) -> int:
    """EAGER_CHUNK_STEPS rounded up to a multiple of every logger's and the finder's interval."""
    periods = [logger.every for logger in system.loggers.values()]
    every = getattr(system.neighbor_finder, "every", None)
    if every:
        periods.append(every)
    period = math.lcm(*periods) if periods else 1
    return period * max(1, -(-EAGER_CHUNK_STEPS // period))


def _simulate_in_chunks(system, integrator, n_steps, key, capacity, start, chunk, check) -> Trajectory:
    """An eager run as consecutive `_run` calls of `chunk` steps, each continuing the last
    (same list, step counter and PRNG key; the results are those of one call). A chunk whose
    list overflowed is rerun alone with a grown capacity. Values need no derivative here, so
    every chunk is a plain scan whatever the grad_mode."""
    state, parts, done = start, [], 0
    while done < n_steps:
        steps = min(chunk, n_steps - done)
        for _ in range(MAX_REALLOCATIONS + 1):
            trajectory = _run(system, integrator, steps, key if done == 0 else None, capacity, "reverse",
                              start=state, keep_step=done > 0)
            if not bool(trajectory.state.neighbors.overflowed):
                break
            capacity = system.neighbor_finder.grown_capacity(trajectory.state.neighbors, capacity)
        if check:
            _eager_checks(trajectory, integrator)
        parts.append(trajectory.logs)
        state, done = trajectory.state, done + steps
    logs = jax.tree_util.tree_map(lambda *records: jnp.concatenate(records), *parts)
    return Trajectory(state, logs)


def _eager_checks(trajectory: Trajectory, integrator) -> None:
    neighbors = trajectory.state.neighbors
    if neighbors is not None and bool(neighbors.overflowed):
        raise SimulationError(f"neighbor list overflow persisted after {MAX_REALLOCATIONS} reallocations")
    bad_step = int(trajectory.state.first_nonfinite_step)
    if bad_step >= 0:
        raise SimulationError(_blow_up_message(bad_step, integrator))


def _blow_up_message(step, integrator) -> str:
    where = f"step {step}" if isinstance(step, int) else "some step"
    return (
        f"simulation blew up: coordinates or velocities became NaN/inf (or coordinates exceeded 1e12) at {where}. "
        f"Reduce the time step (dt = {getattr(integrator, 'dt', '?')}), start from a configuration "
        "without overlaps (random_coords(..., min_distance=...)), or cap the force (LennardJones(force_cap=...))"
    )


def _is_typed_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _error_if(trajectory: Trajectory, pred, message: str) -> Trajectory:
    """`eqx.error_if` on every leaf but typed PRNG keys (jax.random.key), which it cannot carry."""
    keys, rest = eqx.partition(trajectory, _is_typed_key)
    return eqx.combine(keys, eqx.error_if(rest, pred, message))


def _traced_checks(trajectory: Trajectory) -> Trajectory:
    neighbors = trajectory.state.neighbors
    if neighbors is not None:
        trajectory = _error_if(
            trajectory,
            neighbors.overflowed,
            "neighbor list overflow: more pairs within the cutoff than the list capacity. Inside "
            "jit/grad the list cannot be reallocated: give the finder a larger capacity "
            "(DistanceNeighborFinder(..., capacity=n)) or run once eagerly to size it (a cell list also "
            "overflows when a cell holds more atoms than it has slots)",
        )
    return _error_if(trajectory, trajectory.state.first_nonfinite_step >= 0, _blow_up_message(None, None))
