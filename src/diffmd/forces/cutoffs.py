"""Cutoff schemes, independent of the potential they truncate.

A cutoff turns a raw radial potential V(r) into the energy actually used. Each scheme keeps
the force equal to −dE/dr exactly (forces come from autodiff of the returned energy).
Pairs beyond the cutoff contribute exactly zero energy and zero gradient.

    NoCutoff()                     E = V(r)
    PlainCutoff(rc)                E = V(r)                              for r < rc
    ShiftedPotentialCutoff(rc)     E = V(r) − V(rc)                      for r < rc
    ShiftedForceCutoff(rc)         E = V(r) − V(rc) − (r − rc) V'(rc)    for r < rc
    SwitchedCutoff(rc, rs)         E = S(r) V(r), S = 1 − 10x³ + 15x⁴ − 6x⁵,
                                   x = (r − rs)/(rc − rs) clipped to [0, 1] (OpenMM's switch);
                                   note the order: cutoff first, then switch_distance
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

Potential = Callable[[Array], Array]


class NoCutoff(eqx.Module):
    """No truncation: every pair interacts at any distance."""

    @property
    def distance(self) -> float:
        return float("inf")

    def apply(self, potential: Potential, r: Array) -> Array:
        return potential(r)

    def apply_r2(self, potential_r2: Potential, r2: Array) -> Array:
        """`apply` for a potential written as a function of r² (see `energy_r2`)."""
        return potential_r2(r2)


class _RadialCutoff(eqx.Module):
    distance: float = eqx.field(static=True)

    def __check_init__(self):
        if not self.distance > 0:
            raise ValueError(f"{type(self).__name__}: cutoff distance must be positive, got {self.distance}")

    def _inside(self, r: Array):
        inside = r < self.distance
        return inside, jnp.where(inside, r, self.distance)

    def _inside_r2(self, r2: Array):
        inside = r2 < self.distance**2
        return inside, jnp.where(inside, r2, self.distance**2)


class PlainCutoff(_RadialCutoff):
    """Energy is V(r) inside `distance`, zero outside (discontinuous energy, as in Molly)."""

    def apply(self, potential: Potential, r: Array) -> Array:
        inside, r_in = self._inside(r)
        return jnp.where(inside, potential(r_in), 0.0)

    def apply_r2(self, potential_r2: Potential, r2: Array) -> Array:
        inside, r2_in = self._inside_r2(r2)
        return jnp.where(inside, potential_r2(r2_in), 0.0)


class ShiftedPotentialCutoff(_RadialCutoff):
    """V(r) − V(rc) inside `distance`: continuous energy, force jumps at rc."""

    def apply(self, potential: Potential, r: Array) -> Array:
        inside, r_in = self._inside(r)
        v_cut = potential(jnp.full_like(r, self.distance))
        return jnp.where(inside, potential(r_in) - v_cut, 0.0)

    def apply_r2(self, potential_r2: Potential, r2: Array) -> Array:
        inside, r2_in = self._inside_r2(r2)
        v_cut = potential_r2(jnp.full_like(r2, self.distance**2))
        return jnp.where(inside, potential_r2(r2_in) - v_cut, 0.0)


class ShiftedForceCutoff(_RadialCutoff):
    """V(r) − V(rc) − (r − rc)V'(rc) inside `distance`: energy and force both continuous."""

    def apply(self, potential: Potential, r: Array) -> Array:
        inside, r_in = self._inside(r)
        rc = jnp.full_like(r, self.distance)
        v_cut, dv_cut = jax.jvp(potential, (rc,), (jnp.ones_like(rc),))
        return jnp.where(inside, potential(r_in) - v_cut - (r_in - rc) * dv_cut, 0.0)


class SwitchedCutoff(_RadialCutoff):
    """OpenMM's switching function: V(r)·S(r), smooth from `switch_distance` to `distance`."""

    switch_distance: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not 0 <= self.switch_distance < self.distance:
            raise ValueError(
                f"SwitchedCutoff: need 0 <= switch_distance < distance, got {self.switch_distance}, {self.distance}"
            )

    def apply(self, potential: Potential, r: Array) -> Array:
        inside, r_in = self._inside(r)
        # r_in ≤ distance, so x ≤ 1 already: only the lower end is clamped (a select, whose
        # derivative is cheaper than jnp.clip's, which averages the two sides at the ends)
        t = (r_in - self.switch_distance) / (self.distance - self.switch_distance)
        x = jnp.where(t > 0.0, t, 0.0)
        switch = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
        return jnp.where(inside, potential(r_in) * switch, 0.0)


Cutoff = NoCutoff | PlainCutoff | ShiftedPotentialCutoff | ShiftedForceCutoff | SwitchedCutoff
"""Any cutoff a pair potential takes."""
