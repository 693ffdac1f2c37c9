"""The dynamic state carried from step to step, and what a force evaluation returns."""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
from jax import Array

from ..neighbors import NeighborList


class MDState(eqx.Module):
    """The dynamic state carried from step to step.

    Attributes:
        coords, velocities, forces: (N, D) arrays (length, length/time, energy/length).
        potential_energy: scalar (energy units) of the energy-based interactions.
        step: int32 number of steps taken.
        key: PRNG key for stochastic integrators and couplings, or None.
        neighbors: the current NeighborList, or None.
        first_nonfinite_step: int32, the first step whose coordinates were NaN/inf, −1 if none.
        boundary: the current box where a coupling changes it (a barostat), else None: the
            System's box holds.
        couplings: the couplings' own state, one entry per coupling of the integrator (None for
            those that keep none; a barostat's adaptive step size and acceptance counts).
        integrator_state: the integrator's own state (a Nosé–Hoover chain's thermostat
            variables), or None.
    """

    coords: Array
    velocities: Array
    forces: Array
    potential_energy: Array
    step: Array
    key: Array | None
    neighbors: NeighborList | None
    first_nonfinite_step: Array
    boundary: object | None = None
    couplings: tuple = ()
    integrator_state: object | None = None

    def box(self, system):
        """The box this state lives in: its own where a barostat moves it, else the System's."""
        return system.boundary if self.boundary is None else self.boundary


class ForceEval(NamedTuple):
    """Energy and forces at some coordinates, and the neighbor list they were computed with
    (opaque to integrators: they hand back the last one they got)."""

    energy: Array
    forces: Array
    neighbors: NeighborList | None


ForceFn = Callable[[Array], ForceEval]
"""What an integrator calls to get the forces at new coordinates."""
