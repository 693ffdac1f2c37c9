"""Built-in specific (bonded) interactions, stored batched: one row of `indices` per term.

Each class also has a one-term constructor with the reference's name and argument order
(`HarmonicBond(i, j, r0, k)`, `HarmonicAngle(i, j, k, θ0, k_θ)`); lists of one-term objects
given to `System` are merged into one batch per type. Indices are 0-based.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from .base import SpecificInteraction
from .geometry import bond_angle, dihedral_angle, safe_norm


def _distance(positions, boundary):
    return safe_norm(boundary.vector(positions[:, 0], positions[:, 1]))


def _angle(positions, boundary):
    """Angle at the middle atom j of (i, j, k), radians."""
    return bond_angle(
        boundary.vector(positions[:, 1], positions[:, 0]), boundary.vector(positions[:, 1], positions[:, 2])
    )


def _dihedral(positions, boundary, name="torsion"):
    if positions.shape[-1] != 3:
        raise ValueError(f"{name}: torsions (dihedral angles) need 3-D coordinates, got {positions.shape[-1]}-D")
    b1 = boundary.vector(positions[:, 0], positions[:, 1])
    b2 = boundary.vector(positions[:, 1], positions[:, 2])
    b3 = boundary.vector(positions[:, 2], positions[:, 3])
    return dihedral_angle(b1, b2, b3)


def _float_array(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _row(*values):
    out = [jnp.asarray(v) for v in values]
    for v in out:
        if v.ndim != 0:
            raise ValueError(f"one-term constructors take scalar parameters, got shape {v.shape}; "
                             "use the batched class (e.g. HarmonicBonds) for several terms")
    return out


def _like(x: Array, positions: Array) -> Array:
    """Parameter in the dtype of the coordinates (float32 coordinates stay float32)."""
    return x.astype(positions.dtype)


class HarmonicBonds(SpecificInteraction):
    """Harmonic bonds: V = ½ k (r − r0)², indices (B, 2), r0 (B,) length, k (B,) energy/length²."""

    r0: Array = eqx.field(converter=_float_array)
    k: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 2

    def energy(self, positions, boundary):
        k, r0 = _like(self.k, positions), _like(self.r0, positions)
        return 0.5 * k * (_distance(positions, boundary) - r0) ** 2


class MorseBonds(SpecificInteraction):
    """Morse bonds: V = D (1 − e^(−a (r − r0)))², indices (B, 2); D energy, a 1/length, r0 length."""

    r0: Array = eqx.field(converter=_float_array)
    depth: Array = eqx.field(converter=_float_array)
    a: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 2

    def energy(self, positions, boundary):
        a, r0, depth = (_like(v, positions) for v in (self.a, self.r0, self.depth))
        x = jnp.exp(-a * (_distance(positions, boundary) - r0))
        return depth * (1.0 - x) ** 2


class HarmonicAngles(SpecificInteraction):
    """Harmonic angles: V = ½ k (θ − θ0)², indices (B, 3) with the vertex in the middle;
    θ0 (B,) radians, k (B,) energy/rad²."""

    theta0: Array = eqx.field(converter=_float_array)
    k: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 3

    def energy(self, positions, boundary):
        k, theta0 = _like(self.k, positions), _like(self.theta0, positions)
        return 0.5 * k * (_angle(positions, boundary) - theta0) ** 2


class CosineAngles(SpecificInteraction):
    """Cosine angles (as Molly's CosineAngle): V = k (1 + cos(θ − θ0)), indices (B, 3)."""

    theta0: Array = eqx.field(converter=_float_array)
    k: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 3

    def energy(self, positions, boundary):
        k, theta0 = _like(self.k, positions), _like(self.theta0, positions)
        return k * (1.0 + jnp.cos(_angle(positions, boundary) - theta0))


class PeriodicTorsions(SpecificInteraction):
    """Periodic torsions (OpenMM's PeriodicTorsionForce): V = k (1 + cos(n φ − φ0)),
    indices (B, 4); n (B,) periodicity, φ0 (B,) phase in radians, k (B,) energy.
    A dihedral with several periodicities uses several rows."""

    periodicity: Array = eqx.field(converter=_float_array)
    phase: Array = eqx.field(converter=_float_array)
    k: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 4

    def energy(self, positions, boundary):
        phi = _dihedral(positions, boundary, type(self).__name__)
        n, phase, k = (_like(v, positions) for v in (self.periodicity, self.phase, self.k))
        return k * (1.0 + jnp.cos(n * phi - phase))


class RBTorsions(SpecificInteraction):
    """Ryckaert–Bellemans torsions (OpenMM's RBTorsionForce): V = Σ_{n=0..5} C_n cos(ψ)ⁿ,
    ψ = φ − π; indices (B, 4), coefficients (B, 6) energy."""

    coefficients: Array = eqx.field(converter=_float_array)
    mergeable = True
    atoms_per_term = 4
    parameter_shapes = {"coefficients": (6,)}  # noqa: RUF012

    def energy(self, positions, boundary):
        c = jnp.cos(_dihedral(positions, boundary, type(self).__name__) - jnp.pi)
        # Horner's rule: sum_n C_n c^n with no pow (finite gradients for any sign of c).
        coefficients = _like(self.coefficients, positions)
        total = coefficients[:, 5]
        for n in range(4, -1, -1):
            total = total * c + coefficients[:, n]
        return total


# One-term constructors with the reference's names and argument order.


def HarmonicBond(i: int, j: int, r0, k) -> HarmonicBonds:
    """One harmonic bond between atoms i and j (0-based): V = ½ k (r − r0)²."""
    r0, k = _row(r0, k)
    return HarmonicBonds(indices=[[i, j]], r0=r0[None], k=k[None])


def MorseBond(i: int, j: int, r0, depth, a) -> MorseBonds:
    """One Morse bond: V = D (1 − e^(−a (r − r0)))²."""
    r0, depth, a = _row(r0, depth, a)
    return MorseBonds(indices=[[i, j]], r0=r0[None], depth=depth[None], a=a[None])


def HarmonicAngle(i: int, j: int, k_: int, theta0, k) -> HarmonicAngles:
    """One harmonic angle i–j–k_ (vertex j): V = ½ k (θ − θ0)², θ0 in radians."""
    theta0, k = _row(theta0, k)
    return HarmonicAngles(indices=[[i, j, k_]], theta0=theta0[None], k=k[None])


def CosineAngle(i: int, j: int, k_: int, theta0, k) -> CosineAngles:
    """One cosine angle i–j–k_: V = k (1 + cos(θ − θ0))."""
    theta0, k = _row(theta0, k)
    return CosineAngles(indices=[[i, j, k_]], theta0=theta0[None], k=k[None])


def PeriodicTorsion(i: int, j: int, k_: int, l: int, periodicity, phase, k) -> PeriodicTorsions:
    """One periodic torsion term: V = k (1 + cos(n φ − φ0))."""
    periodicity, phase, k = _row(periodicity, phase, k)
    return PeriodicTorsions(indices=[[i, j, k_, l]], periodicity=periodicity[None], phase=phase[None], k=k[None])


def RBTorsion(i: int, j: int, k_: int, l: int, coefficients) -> RBTorsions:
    """One Ryckaert–Bellemans torsion with six coefficients C0…C5."""
    coefficients = jnp.asarray(coefficients)
    if coefficients.shape != (6,):
        raise ValueError(f"RBTorsion: need 6 coefficients, got shape {coefficients.shape}")
    return RBTorsions(indices=[[i, j, k_, l]], coefficients=coefficients[None])
