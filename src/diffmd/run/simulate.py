"""`simulate`: run a System forward with an integrator inside one compiled `lax.scan`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import reduce

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .._checks import concrete_or_none, is_traced
from ..dynamics.state import MDState
from ..energy import energy_and_forces
from ..neighbors import Capacity
from ..space.boundaries import RectangularBoundary
from .checks import SimulationError, check_arguments, checked_inputs, eager_checks, traced_checks
from .driver import coupling_states, force_function, in_box, initial_state, list_builder, moves_box, step_function
from .modes import REVERSE_ONLY, Truncate, explained, parse_grad_mode
from .scan import Rows, scan, segment_steps

MAX_REALLOCATIONS = 5
BAROSTAT_BOX_MARGIN = 0.9
"""Under a barostat the cell grid is sized for box sides this much smaller than the start's
(27 % less volume); a box that shrinks further stops the run with an error naming it."""
EAGER_CHUNK_STEPS = 1000
"""Eager runs with a neighbor list go in chunks of about this many steps (a multiple of every
logger's and the finder's interval): an overflow reruns only the chunk it happened in."""


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


@dataclass(frozen=True)
class _Config:
    """Everything static about one compiled run."""

    n_steps: int
    capacity: Capacity | None
    mode: str = "reverse"
    segment: int | None = None
    truncate: Truncate | None = None
    keep_step: bool = False


def _restart(state: MDState, cut, force_fn) -> MDState:
    """Truncated backpropagation: where `cut`, the state's coordinates and velocities are cut
    from the gradient graph and the forces recomputed from the cut coordinates (so they still
    depend on the parameters); elsewhere the state is unchanged. `force_fn` uses the state's
    list as it is (it is valid for these coordinates). Only energy and forces go through the
    `cond`: a cond over the whole state copied its neighbor rows on every step."""
    coords, velocities = (jnp.where(cut, jax.lax.stop_gradient(a), a) for a in (state.coords, state.velocities))
    energy, forces = jax.lax.cond(cut, lambda: tuple(force_fn(coords, state.neighbors, state.step, state.boundary)[:2]),
                                  lambda: (state.potential_energy, state.forces))
    return eqx.tree_at(lambda s: (s.coords, s.velocities, s.forces, s.potential_energy), state,
                       (coords, velocities, forces.astype(state.forces.dtype), energy.astype(state.potential_energy.dtype)))


def _continued_state(start: MDState, system, integrator, force_fn, config: _Config, key, derivatives: str) -> MDState:
    """The state a continued run starts from: the previous run's coordinates, velocities,
    box, barostat and thermostat variables, and its neighbor list (rebuilt only if its capacity changed), the
    step counter at 0. Forces are recomputed with this System, so they depend on its
    parameters (one force evaluation)."""
    couplings = start.couplings
    if len(couplings) != len(integrator.coupling) or any(
            (own is None) != (not hasattr(c, "initial_state")) for own, c in zip(couplings, integrator.coupling)):
        couplings = coupling_states(system, integrator, start.box(system))  # other couplings than last run's
    boundary = start.box(system) if moves_box(integrator) else None
    neighbors = start.neighbors if system.uses_neighbor_list() else None
    if system.uses_neighbor_list() and (neighbors is None or neighbors.capacity != config.capacity):
        first = force_fn(start.coords, None, jnp.int32(0), boundary)
        neighbors, energy, forces = first.neighbors, first.energy, first.forces
    else:
        energy, forces = energy_and_forces(in_box(system, boundary), start.coords, neighbors, derivatives=derivatives)
    step = start.step if config.keep_step else jnp.int32(0)
    own = start.integrator_state
    fresh = integrator.initial_state(system)
    if jax.tree_util.tree_structure(own) != jax.tree_util.tree_structure(fresh):
        own = fresh  # another integrator than last run's
    return MDState(start.coords, start.velocities, forces.astype(start.coords.dtype), energy, step,
                   start.key if key is None else key, neighbors, jnp.int32(-1), boundary, couplings, own)


def _record_interval(loggers: dict) -> int:
    return reduce(math.gcd, (logger.every for logger in loggers.values()))


@eqx.filter_jit
def _run(system, integrator, key, start: MDState | None, config: _Config) -> Trajectory:
    system = checked_inputs(system)
    mode, n_steps = config.mode, config.n_steps
    derivatives = "forward" if mode == "forward" else "reverse"  # the pair kernels for this mode
    force_fn = force_function(system, config.capacity, derivatives)
    if start is None:
        state = initial_state(system, force_fn, key, integrator)
    else:
        state = _continued_state(start, system, integrator, force_fn, config, key, derivatives)
    steps_per_segment = segment_steps(n_steps, config.segment)
    truncate = config.truncate
    window = truncate.window if truncate else None
    detach_from = n_steps - truncate.last if truncate and truncate.last is not None and truncate.last < n_steps else None
    list_as_is = force_function(system, config.capacity, derivatives, replay=True)  # restarts and replays

    def make_step(force_fn):
        advance_one = step_function(system, integrator, force_fn, config.capacity, derivatives)

        def step(state, _):
            # Truncation cuts the state *entering* a step, so a record or loss taken at a cut
            # point still sees the steps just before it.
            if window is not None or detach_from is not None:
                cut = jnp.zeros((), bool)
                if window is not None:
                    cut = cut | ((state.step % window == 0) & (state.step > 0))
                if detach_from is not None:
                    cut = cut | (state.step == detach_from)
                state = _restart(state, cut, list_as_is)
            return advance_one(state), None

        return step

    step = make_step(force_fn)
    rows = None  # reverse modes with a list: the backward pass restores rows, replays steps
    # (not with a barostat: a step then uses two lists, the one it ends with rebuilt in a new box)
    if mode != "forward" and system.uses_neighbor_list() and not moves_box(integrator):
        build = list_builder(system, config.capacity)
        rows = Rows(lambda reference: build(reference).idx, make_step(list_as_is))

    def advance(state, n):
        return scan(step, state, n, mode, steps_per_segment, rows)[0]

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
        zeros = lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)  # noqa: E731
        return jax.lax.cond(state.step % logger.every == 0, lambda: logger.observe(state, system), zeros)

    # Blocks of `interval` steps end with a record. Checkpointed: short blocks are grouped into
    # segments of about √T steps; a block longer than that is segmented inside instead.
    inner_mode = mode if interval > steps_per_segment else "reverse"

    def block(state, _):
        state = scan(step, state, interval, inner_mode, steps_per_segment, rows)[0]
        return state, {name: observe(logger, state) for name, logger in loggers.items()}

    blocks_per_segment = max(1, steps_per_segment // interval)
    if n_blocks:
        state, records = scan(block, state, n_blocks, mode, blocks_per_segment)
    else:
        shapes = {name: jax.eval_shape(lambda s, lg=logger: lg.observe(s, system), state)
                  for name, logger in loggers.items()}
        records = {name: jax.tree_util.tree_map(lambda s: jnp.zeros((0,) + s.shape, s.dtype), shape)
                   for name, shape in shapes.items()}
    stride = {name: logger.every // interval for name, logger in loggers.items()}
    logs = {name: jax.tree_util.tree_map(lambda r, k=stride[name]: r[k - 1 :: k], rec) for name, rec in records.items()}
    return Trajectory(advance(state, remainder), logs)


def _run_forward(system, state, step, n_steps, loggers) -> Trajectory:
    """Forward-mode run: a `while_loop` (no stored trajectory; reverse mode is refused) writing
    logger records into preallocated buffers."""
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


def _choose_capacity(system, box_may_shrink: bool = False) -> Capacity | None:
    """The neighbor list's static capacity (None without a list). `box_may_shrink` (a
    barostat): a cell grid is chosen for a box BAROSTAT_BOX_MARGIN times smaller, so cells
    stay wider than the list cutoff as the box shrinks."""
    if not system.uses_neighbor_list():
        return None
    capacity = _capacity_for_start(system)
    if box_may_shrink and capacity.grid is not None:
        with jax.ensure_compile_time_eval():
            smaller = RectangularBoundary(jax.lax.stop_gradient(system.boundary.sides) * BAROSTAT_BOX_MARGIN)
            grid = system.neighbor_finder._grid(smaller, system.n_atoms)
        capacity = Capacity(capacity.slots) if grid is None else Capacity(capacity.slots, capacity.cell_slots, grid)
    return capacity


def _capacity_for_start(system) -> Capacity:
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


def simulate(system, integrator, n_steps: int, *, key=None, start: MDState | None = None, grad_mode="reverse",
             truncate: Truncate | None = None, check: bool = True, reporters=()) -> Trajectory:
    """Run `n_steps` of `integrator` from `system`'s coordinates and velocities.

    The whole run is one jitted `lax.scan` (compiled once per static configuration and cached);
    loggers run inside it. Nothing is mutated: the result holds the final state and the logs.
    Differentiable end to end with respect to any float in `system` or `integrator`.

    Args:
        system: the System.
        integrator: e.g. VelocityVerlet(dt, coupling=FrictionThermostat(0.95)).
        n_steps: number of steps (static).
        key: PRNG key (jax.random.key or PRNGKey), needed by stochastic integrators and
            couplings (AndersenThermostat).
        start: continue from a previous run's final state (`trajectory.state`) of the same
            System: its coordinates, velocities and neighbor list are reused (no rebuild), so a
            long run can be made in chunks; forces are recomputed with this System.
            `system.coords` / `velocities` are then ignored; the step counter starts again at
            0 (loggers and an `every` schedule count from the start of this call); `key`, if
            given, replaces the state's PRNG key.
        grad_mode: how gradients through the run are obtained; values and gradients are the
            same in every mode, only cost and memory differ:

            * "reverse" — for jax.grad: a plain scan storing each step's state (memory ∝ T;
              without its neighbor rows). Fastest for short runs.
            * "checkpointed" or `Checkpointed(segment_length)` — for jax.grad with memory
              O(√T): only the state at segment boundaries (default ⌈√T⌉ steps apart) is kept,
              and each segment is recomputed once in the backward pass.
            * "forward" — for jax.jvp / jax.jacfwd: a `while_loop` whose memory does not grow
              with T, with forces and their tangents computed in one pass.

            A transformation the mode cannot serve (jax.jvp of a reverse mode, jax.grad of
            "forward") raises an error naming the mode to use.
        truncate: truncated backpropagation, `Truncate(window=w)` and/or `Truncate(last=k)`.
        check: raise SimulationError if coordinates become NaN/inf or the neighbor list
            overflows. Called eagerly, an overflowing list is reallocated and the affected
            stretch repeated: runs longer than EAGER_CHUNK_STEPS go in chunks, and only the
            chunk that overflowed is rerun. Inside jit/grad the error is raised from the
            compiled code, and so are the input checks (a non-positive mass, a NaN parameter,
            a box side below twice a cutoff).
        reporters: `diffmd.io` reporters (StateDataReporter, TrajectoryReporter) that write the
            run to files as it goes, chunk by chunk (eager calls only; their records are not
            kept in the returned logs, so memory does not grow with the run).
    """
    check_arguments(n_steps, integrator, key if key is not None or start is None else getattr(start, "key", None))
    if reporters:
        return _simulate_reported(system, integrator, int(n_steps), key, start, check, tuple(reporters))
    mode, segment = parse_grad_mode(grad_mode)
    if mode != "forward" and _forward_differentiated((system, integrator, start)):
        raise TypeError(REVERSE_ONLY.format(mode=mode))
    if truncate is not None and not isinstance(truncate, Truncate):
        raise TypeError(f"simulate: truncate must be a Truncate(window=…, last=…), got {type(truncate).__name__}")
    n_steps = int(n_steps)
    if start is not None and not isinstance(start, MDState):
        raise TypeError(f"simulate: start must be the MDState of a previous run (trajectory.state), got {type(start).__name__}")
    if start is not None and start.coords.shape != system.coords.shape:
        raise ValueError(f"simulate: start has coordinates of shape {start.coords.shape}, the System {system.coords.shape}")
    capacity = (start.neighbors.capacity if start is not None and start.neighbors is not None
                and system.uses_neighbor_list() else _choose_capacity(system, moves_box(integrator)))
    traced = is_traced((system, integrator, key, start)) or _under_jit()
    chunk = _chunk_steps(system, integrator)
    if not traced and system.uses_neighbor_list() and n_steps > chunk:
        return _simulate_in_chunks(system, integrator, n_steps, key, capacity, start, chunk, check)
    for _ in range(MAX_REALLOCATIONS + 1):
        config = _Config(n_steps, capacity, mode, segment, truncate)
        try:
            trajectory = _run(system, integrator, key, start, config)
        except (TypeError, ValueError) as error:
            better = explained(error, mode)
            if better is None:
                raise
            raise better from None
        neighbors = trajectory.state.neighbors
        traced = traced or is_traced(trajectory.state)
        if traced or neighbors is None or not bool(neighbors.overflowed):
            break
        capacity = system.neighbor_finder.grown_capacity(neighbors, capacity)
    if not check:
        return trajectory
    if traced:
        return traced_checks(trajectory)
    eager_checks(trajectory, integrator, MAX_REALLOCATIONS)
    return trajectory


def _forward_differentiated(tree) -> bool:
    """True if `tree` holds values being differentiated in forward mode (jax.jvp, jacfwd):
    reverse mode (jax.grad) linearizes with tracers of another kind."""
    return any(type(leaf).__name__ == "JVPTracer" for leaf in jax.tree_util.tree_leaves(tree))


def _under_jit() -> bool:
    """True while tracing for jit (a fresh computation is then a tracer)."""
    return isinstance(jnp.zeros(()) + 0, jax.core.Tracer)


def _chunk_steps(system, integrator=None) -> int:
    """EAGER_CHUNK_STEPS rounded up to a multiple of every logger's, the finder's and the
    couplings' (a barostat's) interval: a run continued from a chunk's end then keeps every
    schedule in step."""
    periods = [logger.every for logger in system.loggers.values()]
    periods += [c.frequency for c in getattr(integrator, "coupling", ()) if getattr(c, "frequency", None)]
    every = getattr(system.neighbor_finder, "every", None)
    if every:
        periods.append(every)
    period = math.lcm(*periods) if periods else 1
    return period * max(1, -(-EAGER_CHUNK_STEPS // period))


def _simulate_in_chunks(system, integrator, n_steps, key, capacity, start, chunk, check, on_chunk=None,
                        on_state=None) -> Trajectory:
    """An eager run as consecutive `_run` calls of `chunk` steps, each continuing the last
    (same list, step counter and PRNG key; the results are those of one call). A chunk whose
    list overflowed is rerun alone with a grown capacity. Values need no derivative here, so
    every chunk is a plain scan whatever the grad_mode. `on_chunk(logs, first_step, seconds)`
    takes each chunk's logs and returns those to keep; `on_state(state, steps_done, last)` sees
    the state after each chunk."""
    state, parts, done = start, [], 0
    while done < n_steps:
        steps = min(chunk, n_steps - done)
        began = time.perf_counter()
        for _ in range(MAX_REALLOCATIONS + 1):
            config = _Config(steps, capacity, keep_step=done > 0)
            trajectory = _run(system, integrator, key if done == 0 else None, state, config)
            neighbors = trajectory.state.neighbors
            if neighbors is None or not bool(neighbors.overflowed):
                break
            capacity = system.neighbor_finder.grown_capacity(neighbors, capacity)
        if check:
            eager_checks(trajectory, integrator, MAX_REALLOCATIONS)
        logs = trajectory.logs
        if on_chunk is not None:
            jax.block_until_ready(trajectory.state.coords)
            logs = on_chunk(logs, done, time.perf_counter() - began)
        parts.append(logs)
        state, done = trajectory.state, done + steps
        if on_state is not None:
            on_state(state, done, done >= n_steps)
    logs = jax.tree_util.tree_map(lambda *records: jnp.concatenate(records), *parts)
    return Trajectory(state, logs)


def _simulate_reported(system, integrator, n_steps, key, start, check, reporters) -> Trajectory:
    """`simulate` with reporters: an eager run in chunks whose records go to the reporters."""
    from ..io.reporters import after_chunk, close_reporters, hand_out, open_reporters

    if is_traced((system, integrator, key, start)) or _under_jit():
        raise TypeError("simulate: reporters write files as the run goes and need an eager call (not under "
                        "jit, grad or vmap)")
    completed = False
    try:
        extra = open_reporters(reporters, system, float(integrator.dt))
        reported = eqx.tree_at(lambda s: s.loggers, system, {**system.loggers, **extra})
        capacity = (start.neighbors.capacity if start is not None and start.neighbors is not None
                    and system.uses_neighbor_list() else _choose_capacity(system, moves_box(integrator)))
        chunk = _chunk_steps(reported, integrator)
        trajectory = _simulate_in_chunks(reported, integrator, n_steps, key, capacity, start, chunk,
                                         check, lambda logs, first, seconds: hand_out(reporters, logs, first, seconds),
                                         lambda state, done, last: after_chunk(reporters, state, done, last))
        completed = True
        return trajectory
    finally:
        close_reporters(reporters, completed)


__all__ = ["simulate", "Trajectory", "SimulationError"]

