"""Plain Ewald summation's reciprocal-space term (OpenMM's NonbondedForce with the Ewald method)."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._static import StaticArray
from ..units import OPENMM_UNITS
from .ewald import _as_pairs, _Reciprocal


def _as_kmax(values) -> tuple[int, int, int]:
    kmax = tuple(int(v) for v in np.asarray(values).reshape(-1))
    if len(kmax) != 3 or min(kmax) < 1:
        raise ValueError(f"EwaldSum: kmax must be three positive integers, got {values}")
    return kmax


class EwaldSum(_Reciprocal):
    """The reciprocal-space part of Ewald summation as a sum over wave vectors, with the terms
    that complete it:

        E = E_rec + E_self + E_excluded + E_plasma

        E_rec = (2π k / V) Σ_(n ≠ 0, |n_d| < kmax_d) exp(−|g|²/(4α²)) / |g|² · |S(g)|²,
        g = 2π (n_x/L_x, n_y/L_y, n_z/L_z),   S(g) = Σ_j q_j exp(i g·x_j)

    (OpenMM sums the same vectors over half the space with twice the weight).
    E_self = −k α/√π Σ q², E_excluded = −k Σ_excluded q_i q_j erf(α r)/r and
    E_plasma = −k π Q²/(2Vα²) (see `ewald_corrections`). The real-space rest is `EwaldDirect`
    (same α); `ewald_parameters("Ewald", …)` gives α and kmax as OpenMM does. Cost
    O(N · Π(2 kmax_d − 1)); `PME` is the fast method. Units: nm, e, kJ/mol with OpenMM's k.

    Per-atom parameter: `charge` (e). Needs a 3-D RectangularBoundary. Differentiable with
    respect to coordinates, charges, box sides, α and k.

    Attributes:
        alpha: the Ewald splitting parameter α (1/nm), the same as EwaldDirect's.
        kmax: OpenMM's kmax per axis (static): integer wave vectors with |n_d| ≤ kmax_d − 1.
        excluded: static (E, 2) pairs whose interaction is not in the direct sum (as `PME`'s).
        coulomb_const: k (default OpenMM's 138.935458 kJ/mol·nm/e²).
    """

    alpha: float
    kmax: tuple = eqx.field(static=True, converter=_as_kmax)
    excluded: StaticArray = eqx.field(static=True, converter=_as_pairs, default=())
    coulomb_const: float = OPENMM_UNITS.coulomb

    def reciprocal_energy(self, coords, sides, charges):
        dtype = coords.dtype
        waves = [np.arange(1 - k, k) for k in self.kmax]  # n_d = −(kmax_d − 1) … kmax_d − 1
        # exp(i g_d x_d) per atom and axis, (N, 2 kmax_d − 1); S(g) is their product summed over atoms
        phases = [jnp.exp(1j * (2.0 * math.pi * coords[:, d, None] / sides[d]) * jnp.asarray(waves[d], dtype))
                  for d in range(3)]
        structure = jnp.einsum("j,jx,jy,jz->xyz", charges.astype(phases[0].dtype), *phases)
        power = structure.real**2 + structure.imag**2
        axes = [(2.0 * math.pi * jnp.asarray(waves[d], dtype) / sides[d]) ** 2 for d in range(3)]
        g2 = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
        origin = tuple(k - 1 for k in self.kmax)
        is_origin = np.zeros(tuple(2 * k - 1 for k in self.kmax), bool)
        is_origin[origin] = True
        g2 = g2 + is_origin  # g = 0 is left out: no division by zero there
        alpha = jnp.asarray(self.alpha, dtype)
        terms = jnp.where(is_origin, 0.0, jnp.exp(-g2 / (4.0 * alpha**2)) / g2 * power)
        volume = sides[0] * sides[1] * sides[2]
        return 2.0 * math.pi * jnp.asarray(self.coulomb_const, dtype) / volume * jnp.sum(terms)
