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
import numpy as np
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
        degrees_of_freedom: N_f, the system's (N·D less constraints and removed COM motion).
    """

    inv_mass: Array
    constraints: Constraints
    boundary: object
    key: Array | None
    boltzmann: float = 1.0
    degrees_of_freedom: int = 0


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

    def initial_state(self, system):
        """The integrator's own state at the start of a run (kept in `MDState.integrator_state`);
        None for the integrators that keep none."""
        return None

    def advance(self, x, v, current: ForceEval, forces: ForceFn, ctx: StepContext, own):
        """`update` for integrators with a state of their own (`own`, returned updated)."""
        return (*self.update(x, v, current, forces, ctx), own)

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
    coupling: tuple = eqx.field(default=(), converter=as_couplings)
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
        coupling: couplings applied after each step, e.g. MonteCarloBarostat(1.0, 300.0).
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


class NoseHooverState(eqx.Module):
    """A Nosé–Hoover chain's thermostat variables.

    Attributes:
        positions: (M,) ξ_k (dimensionless).
        velocities: (M,) v_ξk = dξ_k/dt (1/time).
        energy: the chain's energy Σ ½ Q_k v_ξk² + N_f k_B T ξ_1 + k_B T Σ_{k≥2} ξ_k, which
            the conserved quantity adds to the system's kinetic and potential energies.
    """

    positions: Array
    velocities: Array
    energy: Array


def _yoshida_suzuki_weights(order: int) -> tuple[float, ...]:
    """Weights of Yoshida–Suzuki's symmetric factorisations (H. Yoshida, Phys. Lett. A 150, 262
    (1990)): sub-steps whose lengths sum to one and cancel error terms up to `order`."""
    if order == 1:
        return (1.0,)
    if order == 3:
        w = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
        return (w, 1.0 - 2.0 * w, w)
    if order == 5:
        w = 1.0 / (4.0 - 4.0 ** (1.0 / 3.0))
        return (w, w, 1.0 - 4.0 * w, w, w)
    if order == 7:
        w1, w2, w3 = 0.784513610477560, 0.235573213359357, -1.17767998417887
        return (w1, w2, w3, 1.0 - 2.0 * (w1 + w2 + w3), w3, w2, w1)
    raise ValueError(f"NoseHooverChain: yoshida_suzuki must be 1, 3, 5 or 7, got {order}")


class NoseHooverChain(Integrator):
    """Velocity Verlet with a Nosé–Hoover chain thermostat (OpenMM's NoseHooverIntegrator;
    Martyna, Klein & Tuckerman, J. Chem. Phys. 97, 2635 (1992); the Trotter splitting of
    Martyna, Tuckerman, Tobias & Klein, Mol. Phys. 87, 1117 (1996)):

        chain(dt/2) · velocity Verlet(dt) · chain(dt/2),

    where the chain's half step, split into `n_mts` × Yoshida–Suzuki sub-steps, propagates

        dv_ξ1/dt = (Σ m v² − N_f k_B T)/Q_1 − v_ξ1 v_ξ2,   Q_1 = N_f k_B T/ω²,
        dv_ξk/dt = (Q_(k−1) v_ξ(k−1)² − k_B T)/Q_k − v_ξk v_ξ(k+1),   Q_k = k_B T/ω²,
        dξ_k/dt = v_ξk,   dv/dt = −v_ξ1 v   (every velocity scaled by exp(−v_ξ1 δ)).

    Deterministic, time-reversible, and canonical for ergodic systems; it conserves
    H = K + U + Σ ½ Q_k v_ξk² + N_f k_B T ξ_1 + k_B T Σ_{k≥2} ξ_k (`ConservedEnergyLogger`).
    Scaling keeps constraints and zero total momentum. Differentiable like velocity Verlet.

    Attributes:
        dt: time step (ps).
        temperature: T (K).
        collision_frequency: ω (1/ps), the thermostat's frequency (OpenMM's collisionFrequency).
        chain_length: M thermostats in the chain (static; OpenMM's default 3).
        n_mts: multiple-time-step sub-steps of each chain half step (static; default 3).
        yoshida_suzuki: order of the factorisation of each sub-step, 1, 3, 5 or 7 (static; 7).
    """

    dt: float
    temperature: float
    collision_frequency: float
    chain_length: int = eqx.field(static=True, default=3)
    n_mts: int = eqx.field(static=True, default=3)
    yoshida_suzuki: int = eqx.field(static=True, default=7)

    def __check_init__(self):
        _yoshida_suzuki_weights(self.yoshida_suzuki)
        if self.chain_length < 1 or self.n_mts < 1:
            raise ValueError(f"NoseHooverChain: chain_length and n_mts must be >= 1, got {self.chain_length}, {self.n_mts}")

    def initial_state(self, system) -> NoseHooverState:
        zeros = jnp.zeros((self.chain_length,), system.coords.dtype)
        return NoseHooverState(zeros, zeros, jnp.zeros((), system.coords.dtype))

    def update(self, x, v, current, forces, ctx):
        raise TypeError("NoseHooverChain keeps thermostat variables: call advance(…, own) (diffmd.simulate does)")

    def advance(self, x, v, current, forces, ctx, own: NoseHooverState):
        own, v = self._chain_half_step(own, v, ctx)
        x, v, new = VelocityVerlet(self.dt).update(x, v, current, forces, ctx)
        own, v = self._chain_half_step(own, v, ctx)
        return x, v, new, own

    def _chain_half_step(self, own: NoseHooverState, v, ctx):
        dtype = v.dtype
        n_f = ctx.degrees_of_freedom
        kt = jnp.asarray(ctx.boltzmann * self.temperature, dtype)
        q_other = kt / jnp.asarray(self.collision_frequency, dtype) ** 2
        q = jnp.concatenate([(n_f * q_other)[None], jnp.broadcast_to(q_other, (self.chain_length - 1,))])
        last = self.chain_length - 1

        def sub_step(carry, delta):
            xi, v_xi, scale, twice_kinetic = carry
            v_xi = list(v_xi)

            def kick(k, h):  # v_ξk over h, driven by G_k and damped by the next thermostat
                driver = twice_kinetic - n_f * kt if k == 0 else q[k - 1] * v_xi[k - 1] ** 2 - kt
                if k == last:
                    v_xi[k] = v_xi[k] + h * driver / q[k]
                else:
                    damp = jnp.exp(-0.5 * h * v_xi[k + 1])
                    v_xi[k] = (v_xi[k] * damp + h * driver / q[k]) * damp

            for k in reversed(range(self.chain_length)):
                kick(k, 0.5 * delta)
            factor = jnp.exp(-delta * v_xi[0])
            scale, twice_kinetic = scale * factor, twice_kinetic * factor * factor
            xi = xi + delta * jnp.stack(v_xi)
            for k in range(self.chain_length):
                kick(k, 0.5 * delta)
            return (xi, jnp.stack(v_xi), scale, twice_kinetic), None

        # A scan over the n_mts × Yoshida–Suzuki sub-steps, not an unrolled loop: unrolled, the
        # reverse pass of a run took XLA minutes to compile.
        weights = np.tile(_yoshida_suzuki_weights(self.yoshida_suzuki), self.n_mts) / self.n_mts
        deltas = jnp.asarray(weights, dtype) * (0.5 * jnp.asarray(self.dt, dtype))
        start = (own.positions, own.velocities, jnp.ones((), dtype), jnp.sum(v * v / ctx.inv_mass))
        (xi, v_xi, scale, _), _ = jax.lax.scan(sub_step, start, deltas)
        energy = 0.5 * jnp.sum(q * v_xi * v_xi) + n_f * kt * xi[0] + kt * jnp.sum(xi[1:])
        return NoseHooverState(xi, v_xi, energy), v * scale
