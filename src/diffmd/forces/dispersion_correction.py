"""The long-range dispersion correction of a cut-off Lennard-Jones interaction (OpenMM's
NonbondedForce with `setUseDispersionCorrection(True)`)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._static import StaticArray
from .ewald import box_sides
from .base import GlobalInteraction
from .mixing import safe_sqrt

_BLOCK = 256  # classes per block of the class-pair sum (memory O(block × classes))


def lj_classes(sigma, epsilon) -> np.ndarray:
    """(N,) class of each atom: atoms with equal (σ, ε) share one (numbered in order of first
    appearance). Needs concrete values."""
    pairs = np.stack([np.asarray(sigma, np.float64).reshape(-1), np.asarray(epsilon, np.float64).reshape(-1)], 1)
    _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber unique rows by first appearance
    return order[inverse.reshape(-1)].astype(np.int32)


def _as_classes(values) -> StaticArray:
    classes = np.asarray(values)
    if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer) or (classes.size and classes.min() < 0):
        raise ValueError("DispersionCorrection: classes must be a 1-D array of non-negative integers (one per atom)")
    if classes.size and len(np.unique(classes)) != classes.max() + 1:
        raise ValueError("DispersionCorrection: classes must be numbered 0 … C−1 with none left out")
    return StaticArray(classes)


class DispersionCorrection(GlobalInteraction):
    """The energy of the Lennard-Jones pairs beyond the cutoff, for a uniform fluid beyond it
    (and, with a switch, what the switch takes away between rs and rc):

        E = 8π N² / V · [ ⟨ε σ¹²⟩ / (9 rc⁹) − ⟨ε σ⁶⟩ / (3 rc³) + ⟨ε (σ¹² I₁₂ − σ⁶ I₆)⟩ ],
        I₁₂ = ∫_rs^rc r⁻¹⁰ (1 − S(r)) dr,   I₆ = ∫_rs^rc r⁻⁴ (1 − S(r)) dr   (only with a switch),

    S the switching function (1 − 10t³ + 15t⁴ − 6t⁵, t = (r − rs)/(rc − rs)), ⟨·⟩ the mean over
    the N(N+1)/2 pairs i ≤ j (each atom with itself included), σ and ε mixed by Lorentz–Berthelot.
    Exactly OpenMM's NonbondedForceImpl::calcDispersionCorrection (E = C/V): the mean is taken
    over classes of atoms with equal (σ, ε) — n_a(n_a+1)/2 pairs within class a, n_a n_b between
    classes a and b — and each class's σ and ε are the means over its atoms, so the gradient of
    every atom's σ and ε is exact where the atoms of a class agree (as the classes say).

    Units: nm, kJ/mol (σ nm, ε kJ/mol, V nm³). Per-atom parameters: `sigma`, `epsilon`. Needs
    a 3-D RectangularBoundary. Differentiable with respect to σ, ε and the box sides.

    Attributes:
        classes: static (N,) class of each atom (`lj_classes(σ, ε)`, or
            `DispersionCorrection.from_parameters`).
        cutoff: the Lennard-Jones cutoff rc (nm), static.
        switch_distance: where OpenMM's switching function starts (nm), static; None for none.
    """

    openmm_force = "NonbondedForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    classes: StaticArray = eqx.field(static=True, converter=_as_classes)
    cutoff: float = eqx.field(static=True, default=1.0)
    switch_distance: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"DispersionCorrection: the cutoff must be positive, got {self.cutoff}")
        if self.switch_distance is not None and not 0 < self.switch_distance < self.cutoff:
            raise ValueError(f"DispersionCorrection: the switch distance must lie in (0, cutoff = {self.cutoff}), "
                             f"got {self.switch_distance}")

    @classmethod
    def from_parameters(cls, sigma, epsilon, cutoff: float, switch_distance: float | None = None):
        """The correction for atoms with these (concrete) per-atom σ and ε."""
        return cls(lj_classes(sigma, epsilon), cutoff, switch_distance)

    def energy(self, coords, boundary, atoms):
        sides = box_sides(boundary, "DispersionCorrection")
        for name in ("sigma", "epsilon"):
            if name not in atoms:
                raise ValueError(f"DispersionCorrection needs per-atom {name!r}, which the Atoms do not have "
                                 f"(they have {', '.join(atoms.names)})")
        classes = self.classes.array
        n_atoms = coords.shape[0]
        if len(classes) != n_atoms:
            raise ValueError(f"DispersionCorrection: classes has {len(classes)} entries but there are {n_atoms} atoms")
        dtype = coords.dtype
        n_classes = int(classes.max()) + 1 if n_atoms else 0
        if not n_classes:
            return jnp.zeros((), dtype)
        counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
        ids = jnp.asarray(classes)
        mean = lambda v: jax.ops.segment_sum(v.astype(dtype), ids, n_classes) / counts.astype(dtype)  # noqa: E731
        sigma, epsilon = mean(atoms.sigma), mean(atoms.epsilon)
        sums = _class_pair_sums(sigma, epsilon, counts, self._integrals())
        rc = self.cutoff
        mean_terms = (sums[0] / (9.0 * rc**9) - sums[1] / (3.0 * rc**3) + sums[2]) / (n_atoms * (n_atoms + 1) / 2)
        volume = jnp.prod(sides.astype(dtype))
        return 8.0 * math.pi * float(n_atoms) ** 2 * mean_terms / volume

    def _integrals(self) -> tuple[float, float]:
        """(I₁₂, I₆): 0 without a switch."""
        if self.switch_distance is None:
            return 0.0, 0.0
        return switch_integrals(self.switch_distance, self.cutoff)


def switch_integrals(switch_distance: float, cutoff: float) -> tuple[float, float]:
    """(∫ r⁻¹⁰ (1 − S) dr, ∫ r⁻⁴ (1 − S) dr) from rs to rc, S OpenMM's switching function, by
    Gauss–Legendre quadrature on geometric panels: positive, smooth integrands, so float64
    rounding is all the error (a closed form cancels terms ~1/(rc − rs)⁵ apart)."""
    nodes, weights = np.polynomial.legendre.leggauss(24)
    edges = np.geomspace(switch_distance, cutoff, 33)
    a, b = edges[:-1, None], edges[1:, None]
    r = 0.5 * (a + b) + 0.5 * (b - a) * nodes
    w = 0.5 * (b - a) * weights
    t = (r - switch_distance) / (cutoff - switch_distance)
    off = t**3 * (10.0 - 15.0 * t + 6.0 * t * t)  # 1 − S(r)
    return float(np.sum(w * off / r**10)), float(np.sum(w * off / r**4))


def _class_pair_sums(sigma, epsilon, counts: np.ndarray, integrals):
    """(Σ w ε σ¹², Σ w ε σ⁶, Σ w ε (σ¹² I₁₂ − σ⁶ I₆)) over class pairs a ≤ b, with
    w = n_a(n_a+1)/2 within a class and n_a n_b between two; σ_ab = (σ_a + σ_b)/2,
    ε_ab = √ε_a √ε_b (ε_a itself within a class, as OpenMM). In blocks of rows: memory
    O(block × classes), not classes²."""
    dtype = sigma.dtype
    n = sigma.shape[0]
    block = min(n, _BLOCK)
    padded = -(-n // block) * block
    pad = lambda v: jnp.concatenate([v, jnp.ones(padded - n, dtype)]) if padded > n else v  # noqa: E731
    counts_p = np.concatenate([counts, np.zeros(padded - n)])  # padding: classes of no atoms
    root = safe_sqrt(epsilon)
    i12, i6 = integrals

    def rows(args):
        start, sigma_r, epsilon_r, root_r = args
        row = start + jnp.arange(block)
        col = jnp.arange(n)
        n_r = jnp.asarray(counts_p, dtype)[row][:, None]
        n_c = jnp.asarray(counts, dtype)[None, :]
        same = row[:, None] == col[None, :]
        weight = jnp.where(same, 0.5 * n_r * (n_r + 1.0), jnp.where(row[:, None] < col[None, :], n_r * n_c, 0.0))
        s = 0.5 * (sigma_r[:, None] + sigma[None, :])
        e = jnp.where(same, epsilon_r[:, None], root_r[:, None] * root[None, :])
        s6 = (s * s) ** 3
        we = weight * e
        return jnp.stack([jnp.sum(we * s6 * s6), jnp.sum(we * s6), jnp.sum(we * (s6 * s6 * i12 - s6 * i6))])

    starts = jnp.arange(0, padded, block)
    blocks = (starts, pad(sigma).reshape(-1, block), pad(epsilon).reshape(-1, block), pad(root).reshape(-1, block))
    return jnp.sum(jax.lax.map(rows, blocks), axis=0)
