"""Barostats: couplings that change the box (constant pressure).

A barostat acts on more than the velocities: it scales coordinates and the box and needs the
energy at a trial box. The driver (`diffmd.run.driver`) hands it the step's coordinates,
energy and forces, the current box, the barostat's own state (kept in `MDState.couplings`)
and a function that evaluates energy and forces at trial coordinates in a trial box with a
fresh neighbor list.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ..space.boundaries import RectangularBoundary
from .couplings import Coupling


class BoxMove(NamedTuple):
    """What a barostat's `update` returns: the (possibly) new coordinates, box, energy and
    forces, whether a move was accepted (the driver then rebuilds the list for the new box),
    the neighbor counts of the trial evaluation, and the barostat's new state."""

    coords: Array
    boundary: RectangularBoundary
    energy: Array
    forces: Array
    accepted: Array
    trial_counts: tuple
    own: object


class MonteCarloState(eqx.Module):
    """The adaptive state of a `MonteCarloBarostat`.

    Attributes:
        volume_step: the largest volume change a trial proposes (length³).
        attempted, accepted: trials and acceptances since the step size was last adapted.
        total_attempted, total_accepted: over the whole run (acceptance rate = ratio).
    """

    volume_step: Array
    attempted: Array
    accepted: Array
    total_attempted: Array
    total_accepted: Array


class MonteCarloBarostat(Coupling):
    """Isotropic Monte Carlo barostat (OpenMM's MonteCarloBarostat; Chow & Ferguson, Comput.
    Phys. Commun. 91, 283 (1995); Åqvist et al., Chem. Phys. Lett. 384, 288 (2004)).

    Every `frequency` steps a volume change ΔV, uniform in [−δ, δ], is proposed; every
    molecule's centroid is scaled by s = ((V + ΔV)/V)^(1/3) with the molecule moved rigidly (so
    constraints hold exactly), and the box sides by s. The move is accepted with probability
    min(1, exp(−w/k_B T)),

        w = U(new) − U(old) + P ΔV − N_mol k_B T ln((V + ΔV)/V),

    which samples the isothermal–isobaric ensemble together with a thermostat (the barostat
    does not touch velocities). δ starts at 1 % of the volume and adapts every 10 trials
    toward an acceptance between 25 and 75 % (×1.1 or ÷1.1, at most 30 % of V), as OpenMM's.
    Molecules are the connected groups of atoms joined by bonded terms, exclusions, 1-4 pairs
    and constraints. A trial box with a side below twice the largest interaction cutoff is rejected.

    The accept/reject decision is a step function of the coordinates: gradients through a run
    follow the decisions taken (as they follow a thermostat's fixed noise).

    Attributes:
        pressure_bar: P, in bar (OpenMM units: converted to kJ/mol/nm³ with 1 bar =
            0.0602214076 kJ/mol/nm³; in reduced units the number is the pressure itself).
        temperature: T of the acceptance rule (K); the thermostat must hold the same T.
        frequency: steps between trials (static).
        rigid_molecules: scale molecule centroids (True, OpenMM's default) or every atom
            (then N_mol is the number of atoms; not with constraints).
    """

    pressure_bar: float
    temperature: float
    frequency: int = eqx.field(static=True, default=25)
    rigid_molecules: bool = eqx.field(static=True, default=True)
    needs_key = True
    moves_box = True

    def __check_init__(self):
        if not (isinstance(self.frequency, int) and self.frequency >= 1):
            raise ValueError(f"MonteCarloBarostat: frequency must be a positive integer, got {self.frequency!r}")
        for name in ("pressure_bar", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(value))):
                raise ValueError(f"MonteCarloBarostat: {name} must be finite, got {value}")
        if not isinstance(self.temperature, jax.core.Tracer) and not np.asarray(self.temperature) > 0:
            raise ValueError(f"MonteCarloBarostat: temperature must be positive, got {self.temperature}")

    def apply(self, velocities, system, dt, key):
        return velocities  # a barostat leaves velocities alone; `update` acts on the box

    def initial_state(self, system, boundary) -> MonteCarloState:
        if not isinstance(boundary, RectangularBoundary) or boundary.n_dims != 3:
            raise ValueError("MonteCarloBarostat: needs a periodic 3-D box (RectangularBoundary)")
        if not self.rigid_molecules and system.constraints.n_removed(3) and system.constraints.frozen(
                system.n_atoms) is None:
            raise ValueError("MonteCarloBarostat: rigid_molecules=False scales every atom and would break the "
                             "System's distance constraints; keep rigid_molecules=True")
        zero = jnp.zeros((), jnp.int32)
        volume = jax.lax.stop_gradient(boundary.volume)
        return MonteCarloState(0.01 * volume, zero, zero, zero, zero)

    def update(self, number, coords, energy, forces, boundary, own: MonteCarloState, key, system,
               trial: Callable) -> BoxMove:
        """The step numbered `number` has ended at (coords, energy, forces) in `boundary`: every
        `frequency`-th step, try a volume move. `trial(coords, boundary) -> (energy, forces,
        counts)` evaluates a trial with a fresh neighbor list."""
        groups = _Molecules.of(system) if self.rigid_molecules else None
        n_units = groups.count if groups is not None else system.n_atoms
        kt = jnp.asarray(system.units.boltzmann * self.temperature, energy.dtype)
        pressure = jnp.asarray(self.pressure_bar * system.units.energy_density_per_bar, energy.dtype)
        cutoffs = [t.cutoff_distance for t in system.pairwise_inters if np.isfinite(t.cutoff_distance)]
        min_side = 2.0 * max(cutoffs, default=0.0)  # the minimum-image convention's bound

        def attempt(_):
            k_volume, k_accept = jax.random.split(key)
            volume = boundary.volume.astype(energy.dtype)
            delta = own.volume_step.astype(energy.dtype) * (2.0 * jax.random.uniform(k_volume, (), energy.dtype) - 1.0)
            ratio = (volume + delta) / volume
            scale = jnp.cbrt(ratio)
            box = RectangularBoundary(boundary.sides * scale.astype(boundary.sides.dtype))
            moved = _scaled(coords, boundary, scale.astype(coords.dtype), groups)
            new_energy, new_forces, counts = trial(moved, box)
            w = new_energy - energy + pressure * delta - n_units * kt * jnp.log(ratio)
            possible = jnp.isfinite(new_energy) & jnp.all(box.sides >= min_side)
            accept = possible & ((w <= 0) | (jax.random.uniform(k_accept, (), energy.dtype) < jnp.exp(-w / kt)))
            pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
            return (pick(moved, coords), RectangularBoundary(pick(box.sides, boundary.sides)),
                    pick(new_energy, energy), pick(new_forces.astype(forces.dtype), forces), accept, counts)

        def wait(_):
            zero = jnp.zeros((), jnp.int32)
            return coords, boundary, energy, forces, jnp.zeros((), bool), (zero, zero)

        due = number % self.frequency == 0
        coords, box, energy, forces, accepted, counts = jax.lax.cond(due, attempt, wait, None)
        return BoxMove(coords, box, energy, forces, accepted, counts, _adapted(own, due, accepted, box.volume))


def _adapted(own: MonteCarloState, tried, accepted, volume) -> MonteCarloState:
    """Count the trial and, after 10 since the last change, widen (acceptance > 75 %) or narrow
    (< 25 %) the proposal by 10 %, at most 30 % of the volume."""
    tried, accepted = tried.astype(jnp.int32), accepted.astype(jnp.int32)
    attempted, hits = own.attempted + tried, own.accepted + accepted
    full = attempted >= 10
    narrow, widen = full & (hits < 0.25 * attempted), full & (hits > 0.75 * attempted)
    step = own.volume_step
    step = jnp.where(narrow, step / 1.1, jnp.where(widen, jnp.minimum(step * 1.1, 0.3 * volume.astype(step.dtype)), step))
    reset = narrow | widen
    return MonteCarloState(jax.lax.stop_gradient(step), jnp.where(reset, 0, attempted), jnp.where(reset, 0, hits),
                           own.total_attempted + tried, own.total_accepted + accepted)


class _Molecules(NamedTuple):
    """Static molecule membership: atom → molecule index, each molecule's first atom, sizes."""

    of_atom: np.ndarray
    first: np.ndarray
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return len(self.first)

    @staticmethod
    def of(system) -> _Molecules:
        labels = system.molecules()
        first = np.unique(labels, return_index=True)[1]
        return _Molecules(labels, first, np.bincount(labels))


def _scaled(coords, boundary, scale, groups: _Molecules | None):
    """Coordinates with every molecule's centroid (or, with no groups, every atom) scaled by
    `scale` about the origin, molecules moved rigidly. Centroids use minimum-image offsets from
    each molecule's first atom, so a molecule split across the box is still one molecule."""
    if groups is None:
        return coords * scale
    anchor = coords[groups.first]  # (M, 3)
    offsets = boundary.vector(anchor[groups.of_atom], coords)
    centroid = anchor + jax.ops.segment_sum(offsets, groups.of_atom, groups.count) / groups.sizes[:, None]
    return coords + (scale - 1.0) * centroid[groups.of_atom]
