"""CMAP: tabulated energies of pairs of torsions (CHARMM's backbone φ/ψ correction map)."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._static import StaticArray, as_static
from ..space.geometry import term_dihedrals
from ._params import float_array, like
from .base import BondedInteraction

def _bicubic_matrix() -> np.ndarray:
    """B (16, 16): the bicubic coefficients c (c[4k + l] multiplies u^k v^l) of a patch from
    rhs = [E at the 4 corners, ∂E/∂u (4), ∂E/∂v (4), ∂²E/∂u∂v (4)], corners in the order
    (0, 0), (1, 0), (1, 1), (0, 1): c = B @ rhs, B the inverse of the 16 conditions."""
    corners = ((0, 0), (1, 0), (1, 1), (0, 1))

    def condition(x, y, dx, dy):  # ∂^(dx+dy)/∂u^dx ∂v^dy of each monomial u^k v^l at (x, y)
        row = np.zeros(16)
        for k in range(dx, 4):
            for l in range(dy, 4):  # noqa: E741
                row[4 * k + l] = (math.perm(k, dx) * math.perm(l, dy) * x ** (k - dx) * y ** (l - dy))
        return row

    conditions = [condition(x, y, dx, dy) for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)) for x, y in corners]
    return np.linalg.inv(np.array(conditions))


_BICUBIC = _bicubic_matrix()  # c = _BICUBIC @ rhs


@functools.lru_cache(maxsize=None)
def _spline_derivative_matrix(size: int) -> np.ndarray:
    """D (G, G): the derivatives at the G nodes of the periodic natural cubic spline through
    G values on a uniform grid of period 2π, D @ y (OpenMM's SplineFitter::createPeriodicSpline
    followed by evaluateSplineDerivative at each node). It depends only on G, so it is built
    once here; the values are applied to it in JAX.

    With h = 2π/G, shift S (S y)_i = y_{i+1}, the second derivatives M at the nodes solve
    (S⁻¹ + 4 + S) M = (6/h²)(S⁻¹ − 2 + S) y, and y'_i = (y_{i+1} − y_i)/h − h (2 M_i + M_{i+1})/6.
    """
    h = 2.0 * math.pi / size
    eye = np.eye(size)
    shift = np.roll(eye, 1, axis=1)  # (shift @ y)[i] = y[i+1]
    back = shift.T
    second = np.linalg.solve(back + 4.0 * eye + shift, (6.0 / h**2) * (back - 2.0 * eye + shift))
    return (shift - eye) / h - (h / 6.0) * (2.0 * eye + shift) @ second


def _as_maps(values) -> Array:
    maps = float_array(values)
    return maps[None] if maps.ndim == 2 else maps


def _as_map_index(values) -> StaticArray:
    return as_static(np.atleast_1d(np.asarray(values.array if isinstance(values, StaticArray) else values)))


class CMAPTorsions(BondedInteraction):
    """Correction maps of pairs of torsions (OpenMM's CMAPTorsionForce, CHARMM's CMAP).

    The energy of a term is a bicubic interpolation of a periodic table of energies in its two
    dihedral angles φ (atoms 0–3 of the row) and ψ (atoms 4–7), reproducing OpenMM exactly:

    * indices (B, 8): φ is the dihedral of columns 0–3, ψ that of columns 4–7 (IUPAC sign,
      as OpenMM). CHARMM's backbone CMAP (C−N−CA−C−N, φ = (a0, a1, a2, a3), ψ = (a1, a2, a3, a4))
      is built from 5-atom rows with `CMAPTorsions.from_five_atoms`.
    * maps (M, G, G), energy: the tables, OpenMM's grid: `maps[m, i, j]` is the energy at
      φ = i·2π/G, ψ = j·2π/G (angles taken modulo 2π, so the first row is φ = 0, not −π; a
      CHARMM table that starts at −180° is `np.roll(grid, -(G // 2), axis=(0, 1))` for even G).
      OpenMM's flat `addMap(size, energy)` list has `energy[i + size·j]` = `maps[m, i, j]`;
      convert with `map_from_openmm` / `map_to_openmm`. A single (G, G) map is taken as M = 1.
      The maps are differentiable parameters: the gradient reaches every table value.
    * map_index (B,), static: the map each term uses.

    Interpolation (OpenMM's CMAPTorsionForceImpl::calcMapDerivatives and reference kernel):
    with h = 2π/G, the derivatives at the nodes are those of periodic natural cubic splines,
    ∂E/∂φ along the first axis, ∂E/∂ψ along the second, ∂²E/∂φ∂ψ the spline derivative of
    ∂E/∂ψ along the first axis (each a fixed linear map D of the values, `D @ y`). In the patch
    s = ⌊φ/h⌋, t = ⌊ψ/h⌋ (φ, ψ in [0, 2π)), with u = φ/h − s, v = ψ/h − t,

        V(φ, ψ) = Σ_{k,l=0..3} c_kl u^k v^l,

    where the 16 coefficients c of the patch are the fixed linear combination (OpenMM's `wt`
    table) of the energies, h·∂E/∂φ, h·∂E/∂ψ and h²·∂²E/∂φ∂ψ at its four corners (the standard
    bicubic patch: C¹ everywhere). Forces are −∇V by autodiff.

    Not mergeable (`mergeable = False`): terms with different `maps` would need their tables
    concatenated and their map indices offset. Put all CMAP terms in one `CMAPTorsions`.
    """

    openmm_force = "CMAPTorsionForce"  # the OpenMM force it reproduces (`diffmd.energy_terms` labels)

    maps: Array = eqx.field(converter=_as_maps)
    map_index: StaticArray = eqx.field(static=True, converter=_as_map_index)
    mergeable = False
    atoms_per_term = 8

    def __check_init__(self):
        name = type(self).__name__
        shape = tuple(getattr(self.maps, "shape", ()))
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 2:
            raise ValueError(f"{name}: maps must have shape (n_maps, G, G) with G >= 2, got {shape}")
        index = self.map_index.array
        if index.shape != (self.n_terms,):
            raise ValueError(f"{name}: map_index must have shape ({self.n_terms},) (one map per term), "
                             f"got {index.shape}")
        if self.n_terms and (index.min() < 0 or index.max() >= shape[0]):
            raise ValueError(f"{name}: map_index must be in [0, {shape[0]}) (there are {shape[0]} maps), "
                             f"got values in [{index.min()}, {index.max()}]")

    @classmethod
    def from_five_atoms(cls, indices, maps, map_index) -> CMAPTorsions:
        """CMAP terms from 5-atom rows (a0, a1, a2, a3, a4), e.g. CHARMM's backbone C−N−CA−C−N:
        φ = dihedral(a0, a1, a2, a3), ψ = dihedral(a1, a2, a3, a4)."""
        rows = np.asarray(indices.array if isinstance(indices, StaticArray) else indices)
        if rows.ndim != 2 or rows.shape[1] != 5:
            raise ValueError(f"{cls.__name__}.from_five_atoms: indices must have shape (n_terms, 5), got {rows.shape}")
        return cls(indices=np.concatenate([rows[:, 0:4], rows[:, 1:5]], axis=1), maps=maps, map_index=map_index)

    @staticmethod
    def map_from_openmm(size: int, energy) -> np.ndarray:
        """(G, G) map from OpenMM's flat `energy` list (`energy[i + size·j]`, i along φ)."""
        return np.asarray(energy, dtype=np.float64).reshape(size, size).T

    @staticmethod
    def map_to_openmm(grid) -> list[float]:
        """OpenMM's flat `energy` list (`energy[i + size·j]`) of a (G, G) map."""
        return [float(v) for v in np.asarray(grid, dtype=np.float64).T.ravel()]

    def energy(self, positions, boundary):
        name = type(self).__name__
        phi = term_dihedrals(positions[:, 0:4], boundary, name)
        psi = term_dihedrals(positions[:, 4:8], boundary, name)
        maps = like(self.maps, positions)
        size = maps.shape[-1]
        h = 2.0 * math.pi / size

        # Node derivatives of every map: E (M, G, G), axis 1 is φ, axis 2 is ψ.
        d = jnp.asarray(_spline_derivative_matrix(size), positions.dtype)
        d1 = jnp.einsum("ik,mkj->mij", d, maps)
        d2 = jnp.einsum("jk,mik->mij", d, maps)
        d12 = jnp.einsum("ik,mkj->mij", d, d2)

        # The patch of each term (as OpenMM: angles in [0, 2π), clamped to the last patch).
        two_pi = 2.0 * math.pi
        phi = jnp.fmod(phi + two_pi, two_pi)
        psi = jnp.fmod(psi + two_pi, two_pi)
        s = jnp.minimum(jnp.floor(phi / h), size - 1)
        t = jnp.minimum(jnp.floor(psi / h), size - 1)
        u = phi / h - s
        v = psi / h - t
        s = s.astype(jnp.int32)
        t = t.astype(jnp.int32)
        s1 = (s + 1) % size
        t1 = (t + 1) % size

        m = jnp.asarray(self.map_index.array)
        corners = [(s, t), (s1, t), (s1, t1), (s, t1)]
        rhs = jnp.stack(
            [maps[m, i, j] for i, j in corners]
            + [h * d1[m, i, j] for i, j in corners]
            + [h * d2[m, i, j] for i, j in corners]
            + [h * h * d12[m, i, j] for i, j in corners],
            axis=-1,
        )  # (B, 16)
        c = (rhs @ jnp.asarray(_BICUBIC.T, positions.dtype)).reshape(-1, 4, 4)  # c[b, k, l]: u^k v^l
        powers_u = jnp.stack([jnp.ones_like(u), u, u * u, u * u * u], axis=-1)
        powers_v = jnp.stack([jnp.ones_like(v), v, v * v, v * v * v], axis=-1)
        return jnp.einsum("bk,bkl,bl->b", powers_u, c, powers_v)
