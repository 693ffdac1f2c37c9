"""Couplings applied to the velocities after each integration step (thermostats).

Each coupling is a pytree whose float fields are differentiable; several couplings compose
when given as a tuple to the integrator, applied in order.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..energy import temperature


class Coupling(eqx.Module):
    """Base class: `apply(velocities, system, dt, key) -> velocities`."""

    needs_key = False

    def apply(self, velocities, system, dt, key):
        """The velocities (N, D) after this coupling acts once, `dt` after the last time;
        `key` is a PRNG key when `needs_key` is True (else None)."""
        raise NotImplementedError


class FrictionThermostat(Coupling):
    """Multiply every velocity by γ after each step (the reference's `FrictionThermostat(γ)`).

    Not a canonical thermostat: it drains kinetic energy (γ < 1), which also damps the growth
    of gradients through long trajectories.
    """

    gamma: float

    def apply(self, velocities, system, dt, key):
        return velocities * jnp.asarray(self.gamma, velocities.dtype)


class BerendsenThermostat(Coupling):
    """Berendsen weak coupling: v ← λ v, λ² = 1 + (dt/τ)(T0/T − 1).

    Attributes:
        temperature: target T0 (K, or reduced).
        tau: coupling time τ (ps, or reduced time), τ ≥ dt.
    """

    temperature: float
    tau: float

    def apply(self, velocities, system, dt, key):
        current = temperature(system.atoms.mass, velocities, system.units.boltzmann, system.degrees_of_freedom)
        safe = jnp.where(current > 0, current, 1.0)
        factor = 1.0 + dt / self.tau * (self.temperature / safe - 1.0)
        scale = jnp.where(current > 0, jnp.sqrt(jnp.maximum(factor, 0.0)), 1.0)
        return velocities * scale.astype(velocities.dtype)


class AndersenThermostat(Coupling):
    """Andersen thermostat: each atom's velocity is redrawn from Maxwell–Boltzmann at T0 with
    probability `collision_frequency`·dt per step.

    Attributes:
        temperature: target T0 (K, or reduced).
        collision_frequency: ν (1/ps, or reduced 1/time), as OpenMM's AndersenThermostat.
    """

    temperature: float
    collision_frequency: float
    needs_key = True

    def apply(self, velocities, system, dt, key):
        k_hit, k_vel = jax.random.split(key)
        n, d = velocities.shape
        hit = jax.random.uniform(k_hit, (n,), dtype=velocities.dtype) < self.collision_frequency * dt
        scale = jnp.sqrt(system.units.boltzmann * self.temperature / system.atoms.mass).astype(velocities.dtype)
        fresh = scale[:, None] * jax.random.normal(k_vel, (n, d), dtype=velocities.dtype)
        return jnp.where(hit[:, None], fresh, velocities)


class BussiThermostat(Coupling):
    """Stochastic velocity rescaling (Bussi, Donadio & Parrinello, J. Chem. Phys. 126, 014101
    (2007)): the kinetic energy K is moved to K' drawn from the canonical dynamics of K with
    relaxation time τ, and every velocity scaled by α = √(K'/K):

        c = e^(−dt/τ),  K̄ = N_f k_B T0 / 2,
        K' = c K + (1 − c) K̄ (R₁² + S)/N_f + 2 R₁ √(c (1 − c) K K̄ / N_f),

    R₁ ~ N(0, 1) and S ~ χ²(N_f − 1) (as 2·Gamma((N_f − 1)/2)), N_f the system's degrees of
    freedom. Samples the canonical ensemble exactly (for any τ; τ → 0 redraws K each step) and
    perturbs the dynamics only through K, smoothly; scaling keeps constraints and zero total
    momentum. Differentiable with the noise held fixed by the key.

    Attributes:
        temperature: target T0 (K, or reduced).
        tau: relaxation time τ (ps, or reduced time), > 0.
    """

    temperature: float
    tau: float
    needs_key = True

    def apply(self, velocities, system, dt, key):
        dtype = velocities.dtype
        dof = system.degrees_of_freedom
        kinetic = 0.5 * jnp.sum(system.atoms.mass.astype(dtype)[:, None] * velocities * velocities)
        target = 0.5 * dof * system.units.boltzmann * jnp.asarray(self.temperature, dtype)
        c = jnp.exp(-jnp.asarray(dt, dtype) / jnp.asarray(self.tau, dtype))
        k_first, k_rest = jax.random.split(key)
        r1 = jax.random.normal(k_first, (), dtype)
        rest = 2.0 * jax.random.gamma(k_rest, (dof - 1) / 2.0, (), dtype) if dof > 1 else jnp.zeros((), dtype)
        safe = jnp.where(kinetic > 0, kinetic, 1.0)
        new = (c * safe + (1 - c) * target * (r1 * r1 + rest) / dof
               + 2 * r1 * jnp.sqrt(c * (1 - c) * safe * target / dof))
        scale = jnp.where(kinetic > 0, jnp.sqrt(jnp.maximum(new, 0.0) / safe), 1.0)
        return velocities * scale
