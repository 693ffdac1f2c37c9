"""Integrators and the state they advance."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .couplers import Coupling
from .neighbors import NeighborList


EXPLODED_COORDINATE = 1e12  # |x| beyond this (length units) counts as a blow-up


class MDState(eqx.Module):
    """The dynamic state carried from step to step.

    Attributes:
        coords, velocities, forces: (N, D) arrays (length, length/time, energy/length).
        potential_energy: scalar (energy units) of the energy-based interactions.
        step: int32 number of steps taken.
        key: PRNG key for stochastic couplings, or None.
        neighbors: the current NeighborList, or None.
        first_nonfinite_step: int32, the first step whose coordinates were NaN/inf, −1 if none.
    """

    coords: Array
    velocities: Array
    forces: Array
    potential_energy: Array
    step: Array
    key: Array | None
    neighbors: NeighborList | None
    first_nonfinite_step: Array


# force_fn(coords, neighbors, step) -> (neighbors, potential_energy, forces)
ForceFn = Callable[[Array, NeighborList | None, Array], tuple]


def _as_couplings(coupling) -> tuple:
    if coupling is None:
        return ()
    if isinstance(coupling, Coupling):
        return (coupling,)
    coupling = tuple(coupling)
    for c in coupling:
        if not isinstance(c, Coupling):
            raise TypeError(f"coupling must be a Coupling or a tuple of them, got {type(c).__name__}")
    return coupling


class VelocityVerlet(eqx.Module):
    """Velocity Verlet, then the couplings (thermostats) in order on the new velocities.

        v(t+dt/2) = v(t) + dt/2 · F(t)/m
        x(t+dt)   = x(t) + dt · v(t+dt/2)
        v(t+dt)   = v(t+dt/2) + dt/2 · F(t+dt)/m,  then each coupling acts on v(t+dt).

    Attributes:
        dt: time step (ps, or reduced time units); a differentiable leaf.
        coupling: a Coupling or tuple of Couplings (e.g. FrictionThermostat(0.95)).

    One force evaluation per step. Coordinates are not wrapped into the box (trajectories
    stay continuous; every interaction uses minimum-image vectors).
    """

    dt: float
    coupling: tuple = eqx.field(default=(), converter=_as_couplings)

    @property
    def needs_key(self) -> bool:
        return any(c.needs_key for c in self.coupling)

    def step(self, state: MDState, system, force_fn: ForceFn) -> MDState:
        x, v, f = state.coords, state.velocities, state.forces
        dt = jnp.asarray(self.dt, x.dtype)
        inv_mass = (1.0 / system.atoms.mass).astype(x.dtype)[:, None]
        v_half = v + 0.5 * dt * f * inv_mass
        x_new = x + dt * v_half
        step = state.step + 1
        neighbors, energy, f_new = force_fn(x_new, state.neighbors, step)
        v_new = v_half + 0.5 * dt * f_new * inv_mass
        key = state.key
        for coupling in self.coupling:
            sub = None
            if coupling.needs_key:
                key, sub = jax.random.split(key)
            v_new = coupling.apply(v_new, system, dt, sub)
        # NaN/inf, or coordinates flung beyond any physical scale (in open space a blow-up
        # can stay finite: atoms fly off to 1e17).
        finite = jnp.all(jnp.abs(x_new) < EXPLODED_COORDINATE) & jnp.all(jnp.isfinite(v_new))
        first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, step, state.first_nonfinite_step)
        return MDState(x_new, v_new, f_new, energy, step, key, neighbors, first_bad)
