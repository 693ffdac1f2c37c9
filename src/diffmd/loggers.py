"""Loggers: observables recorded inside the compiled loop, every `every` steps.

A logger's records come back stacked in `Trajectory.logs[name]` with shape (n_records, ...),
the k-th record taken after step k·every (as Molly's loggers; the start is not recorded).
Records are ordinary JAX values computed from the trajectory, so they are differentiable:
a loss can use them directly (the reference notes that Molly's loggers were ignored for
gradient purposes; these are not).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from .energy import kinetic_energy, temperature


class Logger(eqx.Module):
    """Base class: `observe(state, system)` returns the record for the current state.

    `state` is an `MDState` (coords, velocities, forces, potential_energy, step, …).
    """

    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ValueError(f"{type(self).__name__}: every must be a positive integer, got {self.every!r}")

    def observe(self, state, system) -> Array:
        """The value recorded for `state` (an MDState of `system`): an array of fixed shape."""
        raise NotImplementedError


class CoordinatesLogger(Logger):
    """Coordinates (N, D) every `every` steps (the reference's `CoordinateLogger(n)`)."""

    def observe(self, state, system):
        return state.coords


class VelocitiesLogger(Logger):
    """Velocities (N, D)."""

    def observe(self, state, system):
        return state.velocities


class ForcesLogger(Logger):
    """Forces (N, D), energy/length."""

    def observe(self, state, system):
        return state.forces


class KineticEnergyLogger(Logger):
    """Kinetic energy ½ Σ m v² (energy units)."""

    def observe(self, state, system):
        return kinetic_energy(system.atoms.mass, state.velocities)


class PotentialEnergyLogger(Logger):
    """Potential energy of the energy-based interactions (energy units)."""

    def observe(self, state, system):
        return state.potential_energy


class TotalEnergyLogger(Logger):
    """Kinetic plus potential energy (energy units)."""

    def observe(self, state, system):
        return state.potential_energy + kinetic_energy(system.atoms.mass, state.velocities)


class TemperatureLogger(Logger):
    """Instantaneous temperature 2K/(n_dof k_B) (temperature units), n_dof the system's
    degrees of freedom (N·D less constraints and removed centre-of-mass motion)."""

    def observe(self, state, system):
        return temperature(system.atoms.mass, state.velocities, system.units.boltzmann, system.degrees_of_freedom)


class ConservedEnergyLogger(Logger):
    """Kinetic plus potential energy plus the energy of the integrator's own variables (a
    Nosé–Hoover chain's): the quantity an extended-system integrator conserves (energy
    units). The total energy for integrators without such variables."""

    def observe(self, state, system):
        total = state.potential_energy + kinetic_energy(system.atoms.mass, state.velocities)
        extra = getattr(state.integrator_state, "energy", None)
        return total if extra is None else total + extra


class VolumeLogger(Logger):
    """Volume of the box (length³), the one a barostat has moved to if there is one."""

    def observe(self, state, system):
        return state.box(system).volume


class DensityLogger(Logger):
    """Mass density Σm / V (mass/length³; amu/nm³ in OpenMM units, × AMU_PER_NM3_IN_G_PER_CM3
    for g/cm³)."""

    def observe(self, state, system):
        return jnp.sum(system.atoms.mass) / state.box(system).volume


AMU_PER_NM3_IN_G_PER_CM3 = 1.66053906660e-3
"""1 amu/nm³ in g/cm³ (1.66053906660e-24 g over 1e-21 cm³)."""


class ObservableLogger(Logger):
    """Any observable: `fn(state, system)` returning an array or pytree of arrays.

    Example: `ObservableLogger(lambda s, sys: mean_min_separation(s.coords, sys.boundary), every=10)`.
    """

    fn: Callable = eqx.field(static=True, default=None)

    def __init__(self, fn: Callable, every: int = 1):
        self.fn = fn
        self.every = every

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError("ObservableLogger: fn must be callable as fn(state, system)")

    def observe(self, state, system):
        return self.fn(state, system)
