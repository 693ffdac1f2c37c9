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
    """

    coords: Array
    velocities: Array
    forces: Array
    potential_energy: Array
    step: Array
    key: Array | None
    neighbors: NeighborList | None
    first_nonfinite_step: Array


class ForceEval(NamedTuple):
    """Energy and forces at some coordinates, and the neighbor list they were computed with
    (opaque to integrators: they hand back the last one they got)."""

    energy: Array
    forces: Array
    neighbors: NeighborList | None


ForceFn = Callable[[Array], ForceEval]
"""What an integrator calls to get the forces at new coordinates."""
