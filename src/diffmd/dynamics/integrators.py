"""Integrators: pure updates of positions and velocities.

An integrator gets (x, v), the forces at x, a function that evaluates forces at new
coordinates, and a `StepContext` (inverse masses, the constraint slot, the box, a PRNG key of
its own), and returns the new (x, v) with the forces at the new x. Everything else every
integrator needs — couplings (thermostats), random keys, the step counter, blow-up tracking,
neighbor-list updates, centre-of-mass motion removal — is the driver's (`diffmd.run.driver`).
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .constraints import Constraints, NoConstraints
from .couplings import Coupling
from .state import ForceEval, ForceFn


class StepContext(NamedTuple):
    """What the driver hands an integrator for one step.

    Attributes:
        inv_mass: (N, 1) inverse masses in the coordinates' dtype.
        constraints: the system's constraint slot (apply after every position and velocity update).
        boundary: the box.
        key: a PRNG key for this step (None unless the integrator's `needs_key`).
        boltzmann: k_B in the system's units (energy per temperature).
    """

    inv_mass: Array
    constraints: Constraints
    boundary: object
    key: Array | None
    boltzmann: float = 1.0


def as_couplings(coupling) -> tuple:
    """A tuple of couplings from None, one Coupling or several (the converter of `coupling` fields)."""
    if coupling is None:
        return ()
    if isinstance(coupling, Coupling):
        return (coupling,)
    coupling = tuple(coupling)
    for c in coupling:
        if not isinstance(c, Coupling):
            raise TypeError(f"coupling must be a Coupling or a tuple of them, got {type(c).__name__}")
    return coupling


class Integrator(eqx.Module):
    """Base class: implement `update` and declare `dt`. To take couplings (which the driver
    applies to the velocities after each step, in order) declare
    `coupling: tuple = eqx.field(default=(), converter=as_couplings)`; the default is none."""

    needs_key = False  # the integrator itself draws random numbers (Langevin, …)
    coupling = ()

    @abc.abstractmethod
    def update(self, x: Array, v: Array, current: ForceEval, forces: ForceFn, ctx: StepContext
               ) -> tuple[Array, Array, ForceEval]:
        """One step from (x, v) with `current` the forces at x: the new (x, v) and the forces at the new x."""

    @property
    def needs_any_key(self) -> bool:
        """Whether a run needs a PRNG key (the integrator or one of its couplings draws numbers)."""
        return self.needs_key or any(c.needs_key for c in self.coupling)


class VelocityVerlet(Integrator):
    """Velocity Verlet, then the couplings (thermostats) in order on the new velocities.

        v(t+dt/2) = v(t) + dt/2 · F(t)/m
        x(t+dt)   = x(t) + dt · v(t+dt/2)
        v(t+dt)   = v(t+dt/2) + dt/2 · F(t+dt)/m,  then each coupling acts on v(t+dt).

    With constraints (RATTLE's structure): the new positions are projected onto the
    constraints and the half-step velocities follow them, v(t+dt/2) = (x(t+dt) − x(t))/dt; the
    final velocities are projected too.

    Attributes:
        dt: time step (ps, or reduced time units); a differentiable leaf.
        coupling: a Coupling or tuple of Couplings (e.g. FrictionThermostat(0.95)).

    One force evaluation per step. Coordinates are not wrapped into the box (trajectories
    stay continuous; every interaction uses minimum-image vectors).
    """

    dt: float
    coupling: tuple = eqx.field(default=(), converter=as_couplings)

    def update(self, x, v, current, forces, ctx):
        dt = jnp.asarray(self.dt, x.dtype)
        v_half = v + 0.5 * dt * current.forces * ctx.inv_mass
        x_new = ctx.constraints.positions(x + dt * v_half, x, ctx.inv_mass, ctx.boundary)
        if not isinstance(ctx.constraints, NoConstraints):
            v_half = (x_new - x) / dt  # the velocity that took it there
        new = forces(x_new)
        v_new = v_half + 0.5 * dt * new.forces * ctx.inv_mass
        return x_new, ctx.constraints.velocities(x_new, v_new, ctx.inv_mass, ctx.boundary), new



class _Stochastic(Integrator):
    """Fields shared by the integrators that draw noise at a temperature against a friction."""

    dt: float
    temperature: float
    friction: float
    needs_key = True


class LangevinMiddle(_Stochastic):
    """OpenMM's LangevinMiddleIntegrator (the "middle" leapfrog splitting, V R O R): with
    a = exp(−γ dt),

        v ← v + dt·F(x)/m                         (then constrained)
        x ← x + dt/2·v
        v ← a·v + √((1 − a²) k_B T / m)·ξ,  ξ ~ N(0, 1) from the run's key
        x ← x + dt/2·v                            (then constrained; v ← v + Δx_constraint/dt)

    and the forces at the new x for the next step. Velocities are those of the half step, as
    in OpenMM. Configurations are sampled with O(dt²) error that is small even at 2–4 fs (the
    reason OpenMM recommends it). Reproducible from the key, and differentiable with the noise
    held fixed (the key carries no derivative).

    Attributes:
        dt: time step (ps).
        temperature: T (K).
        friction: γ (1/ps).
    """

    def update(self, x, v, current, forces, ctx):
        dtype = x.dtype
        dt = jnp.asarray(self.dt, dtype)
        a = jnp.exp(-jnp.asarray(self.friction, dtype) * dt)
        kt = jnp.asarray(ctx.boltzmann * self.temperature, dtype)
        v = ctx.constraints.velocities(x, v + dt * current.forces * ctx.inv_mass, ctx.inv_mass, ctx.boundary)
        x_mid = x + 0.5 * dt * v
        noise = jax.random.normal(ctx.key, v.shape, dtype)
        v = a * v + jnp.sqrt((1.0 - a * a) * kt * ctx.inv_mass) * noise
        x_free = x_mid + 0.5 * dt * v
        x_new = ctx.constraints.positions(x_free, x, ctx.inv_mass, ctx.boundary)
        v = v + (x_new - x_free) / dt
        return x_new, v, forces(x_new)


class LeapfrogVerlet(Integrator):
    """OpenMM's VerletIntegrator (leapfrog): the velocities are those of the half step,

        v(t+dt/2) = v(t−dt/2) + dt · F(t)/m
        x(t+dt)   = x(t) + dt · v(t+dt/2)     (then constrained; v(t+dt/2) = (x(t+dt) − x(t))/dt)

    so an OpenMM trajectory started from the same positions and (half-step) velocities is
    reproduced step for step. The same positions as velocity Verlet; only the velocities
    reported differ by half a step. One force evaluation per step.

    Attributes:
        dt: time step (ps); a differentiable leaf.
        coupling: a Coupling or tuple of Couplings applied after each step.
    """

    dt: float
    coupling: tuple = eqx.field(default=(), converter=as_couplings)

    def update(self, x, v, current, forces, ctx):
        dt = jnp.asarray(self.dt, x.dtype)
        v = v + dt * current.forces * ctx.inv_mass
        x_new = ctx.constraints.positions(x + dt * v, x, ctx.inv_mass, ctx.boundary)
        if not isinstance(ctx.constraints, NoConstraints):
            v = (x_new - x) / dt
        return x_new, v, forces(x_new)


class Brownian(_Stochastic):
    """Overdamped Langevin dynamics (OpenMM's BrownianIntegrator):

        x(t+dt) = x(t) + dt/(γ m) · F(t) + √(2 k_B T dt/(γ m)) · ξ,   ξ ~ N(0, 1) from the run's key,

    then constrained; the velocities reported are (x(t+dt) − x(t))/dt (they carry no
    dynamics). Samples the configurational Boltzmann distribution with O(dt) error.

    Attributes:
        dt: time step (ps).
        temperature: T (K).
        friction: γ (1/ps).
    """

    def update(self, x, v, current, forces, ctx):
        dtype = x.dtype
        dt = jnp.asarray(self.dt, dtype)
        mobility = ctx.inv_mass / jnp.asarray(self.friction, dtype)  # 1/(γ m)
        kt = jnp.asarray(ctx.boltzmann * self.temperature, dtype)
        noise = jax.random.normal(ctx.key, x.shape, dtype)
        x_free = x + dt * mobility * current.forces + jnp.sqrt(2.0 * kt * dt * mobility) * noise
        x_new = ctx.constraints.positions(x_free, x, ctx.inv_mass, ctx.boundary)
        return x_new, (x_new - x) / dt, forces(x_new)
