"""Ewald summation's real-space (direct) term, what its reciprocal-space terms share (self
energy, excluded pairs, neutralising background), and OpenMM's choice of its parameters."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jax import Array

from .._static import StaticArray
from ..space.boundaries import RectangularBoundary
from ..space.geometry import safe_norm
from ..units import OPENMM_UNITS
from .base import GlobalInteraction, PairwiseInteraction
from .cutoffs import PlainCutoff


class EwaldDirect(PairwiseInteraction):
    """Real-space Ewald (OpenMM's NonbondedForce with the Ewald, PME or LJPME method):

        V(r) = k q_i q_j erfc(α r) / r   for r < rc, else 0 (a plain cutoff).

    Units: r and rc in nm, α in 1/nm, q in e, k in kJ/mol·nm/e², V in kJ/mol (any consistent
    units work). The rest of the Ewald energy is a global term: `PME` (smooth particle-mesh
    reciprocal sum) or `EwaldSum` (plain reciprocal sum over wave vectors), each with the self
    energy, the correction of excluded pairs and the neutralising background. `ewald_parameters`
    gives α from the cutoff and an error tolerance as OpenMM does.

    Per-atom parameter: `charge` (e).

    Attributes:
        alpha: the Ewald splitting parameter α (1/nm); a differentiable leaf.
        distance: cutoff rc (nm), static.
        use_neighbors: sum over the neighbor list (default) or every pair.
        coulomb_const: k (default OpenMM's 138.935458 kJ/mol·nm/e²).
        weight_14: 1-4 pairs (`System(pairs_14=...)`) get weight_14 × plain Coulomb k q_i q_j / r
            with no cutoff, as OpenMM's exceptions; list them (with every other excluded pair)
            in the reciprocal term's `excluded`, which removes their reciprocal-space part.
    """

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    alpha: float
    distance: float = eqx.field(static=True, default=1.0)
    use_neighbors: bool = eqx.field(static=True, default=True)
    coulomb_const: float = OPENMM_UNITS.coulomb
    weight_14: float = 1.0
    atom_params = ("charge",)

    def __check_init__(self):
        if not self.distance > 0:
            raise ValueError(f"EwaldDirect: the cutoff distance must be positive, got {self.distance}")

    @property
    def cutoff(self):
        return PlainCutoff(self.distance)

    def energy(self, r, p_i, p_j):
        return self.coulomb_const * p_i.charge * p_j.charge * jsp.erfc(self.alpha * r) / r

    def energy_14(self, r, p_i, p_j):
        return self.coulomb_const * p_i.charge * p_j.charge / r


# ---- what every reciprocal-space term shares -----------------------------------------------


def _as_pairs(values) -> StaticArray:
    pairs = np.asarray(values, dtype=np.int64).reshape(-1, 2) if np.size(values) else np.zeros((0, 2), np.int64)
    if len(pairs) and pairs.min() < 0:
        raise ValueError("excluded pairs must hold non-negative (0-based) atom indices")
    return StaticArray(pairs)


def box_sides(boundary, name: str) -> Array:
    """The (3,) sides of a rectangular periodic box; anything else is refused, naming `name`."""
    if not isinstance(boundary, RectangularBoundary) or boundary.n_dims != 3:
        raise ValueError(f"{name} needs a 3-D rectangular periodic box (RectangularBoundary with three sides), "
                         f"got {type(boundary).__name__}"
                         + (f" with {boundary.n_dims} dimensions" if hasattr(boundary, "n_dims") else ""))
    return boundary.sides


def ewald_corrections(coords, boundary, charges, alpha, excluded: np.ndarray, coulomb_const):
    """The terms of an Ewald energy besides the direct and reciprocal sums (OpenMM's):

        E_self     = −k α/√π Σ_i q_i²
        E_excluded = −k Σ_(i,j) q_i q_j erf(α r_ij)/r_ij   over the excluded pairs (E, 2), with
                     the limit 2α/√π at r = 0 (the reciprocal sum includes every pair; an
                     excluded pair must not interact at all), minimum-image distances
        E_plasma   = −k π Q² / (2 V α²),  Q = Σ_i q_i: a uniform background neutralising a net
                     charge (the reciprocal sum leaves out k = 0)

    Units: nm, e, kJ/mol with OpenMM's k (any consistent units work).
    """
    dtype = coords.dtype
    alpha = jnp.asarray(alpha, dtype)
    k = jnp.asarray(coulomb_const, dtype)
    energy = -k * alpha / math.sqrt(math.pi) * jnp.sum(charges**2)
    volume = jnp.prod(boundary.sides.astype(dtype))
    energy = energy - k * math.pi * jnp.sum(charges) ** 2 / (2.0 * volume * alpha**2)
    if len(excluded):
        i, j = jnp.asarray(excluded[:, 0]), jnp.asarray(excluded[:, 1])
        r = safe_norm(boundary.vector(coords[i], coords[j]))
        positive = r > 0
        safe_r = jnp.where(positive, r, 1.0)
        screened = jnp.where(positive, jsp.erf(alpha * safe_r) / safe_r, 2.0 * alpha / math.sqrt(math.pi))
        energy = energy - k * jnp.sum(charges[i] * charges[j] * screened)
    return energy


class _Reciprocal(GlobalInteraction):
    """What `PME` and `EwaldSum` share: α, the excluded pairs, k, and the corrections."""

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    def reciprocal_energy(self, coords, sides, charges):
        raise NotImplementedError

    def energy(self, coords, boundary, atoms):
        name = type(self).__name__
        sides = box_sides(boundary, name).astype(coords.dtype)
        if "charge" not in atoms:
            raise ValueError(f"{name} needs per-atom 'charge', which the Atoms do not have "
                             f"(they have {', '.join(atoms.names)})")
        excluded = self.excluded.array
        if len(excluded) and excluded.max() >= coords.shape[0]:
            raise ValueError(f"{name}: an excluded pair names atom {excluded.max()}, but there are "
                             f"{coords.shape[0]} atoms")
        charges = atoms.charge.astype(coords.dtype)
        reciprocal = self.reciprocal_energy(coords, sides, charges)
        return reciprocal + ewald_corrections(coords, boundary, charges, self.alpha, excluded, self.coulomb_const)


# ---- OpenMM's choice of parameters ---------------------------------------------------------


def ewald_parameters(method: str, cutoff: float, tolerance: float, box_sides) -> tuple[float, tuple[int, int, int]]:
    """(α, grid) for "PME" or (α, kmax) for "Ewald", as OpenMM chooses them from the direct-space
    cutoff rc (nm), the error tolerance δ (NonbondedForce's ewaldErrorTolerance, default 5e-4)
    and the box sides L (nm; a RectangularBoundary or three numbers):

        α = √(−ln 2δ) / rc                                         (1/nm)
        PME:   grid per axis  max(⌈2 α L / (3 δ^(1/5))⌉, 6)
        Ewald: kmax per axis  the first k, searching from 10, at which
               δ − 0.05 √(L α) k exp(−(π k / (L α))²) turns non-negative (searching down if it
               is positive at 10), made odd; `EwaldSum` sums the wave vectors with |n| < kmax.

    The same floating-point operations as OpenMM's (so `getPMEParametersInContext` agrees
    exactly).
    """
    kind = method.lower()
    if kind not in ("pme", "ewald"):
        raise ValueError(f"ewald_parameters: method must be 'PME' or 'Ewald', got {method!r}")
    if not cutoff > 0 or not 0 < tolerance < 0.5:
        raise ValueError(f"ewald_parameters: need a positive cutoff and 0 < tolerance < 0.5, got {cutoff}, {tolerance}")
    sides = box_sides if not isinstance(box_sides, RectangularBoundary) else np.asarray(box_sides.sides)
    sides = [float(s) for s in np.asarray(sides, dtype=np.float64).reshape(-1)]
    if len(sides) != 3:
        raise ValueError(f"ewald_parameters: need three box sides, got {len(sides)}")
    alpha = (1.0 / cutoff) * math.sqrt(-math.log(2.0 * tolerance))
    if kind == "pme":
        return alpha, tuple(max(int(math.ceil(2 * alpha * side / (3 * math.pow(tolerance, 0.2)))), 6) for side in sides)
    return alpha, tuple(_ewald_kmax(side, alpha, tolerance) for side in sides)


def _ewald_kmax(side: float, alpha: float, tolerance: float) -> int:
    def excess(k):  # the tolerance less the estimated error of stopping at k
        x = k * math.pi / (side * alpha)
        return tolerance - 0.05 * math.sqrt(side * alpha) * k * math.exp(-x * x)

    k = 10
    if excess(k) > 0.0:  # already enough: the smallest k above the last one that is not
        while k > 0 and excess(k) > 0.0:
            k -= 1
        k += 1
    else:
        while excess(k) < 0.0:
            k += 1
    return k if k % 2 else k + 1
