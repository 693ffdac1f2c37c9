"""OpenMM quantities as plain numbers in diffmd's units (nm, ps)."""

from __future__ import annotations

import numpy as np


def in_nm(values, per_ps: bool = False) -> np.ndarray:
    """An (N, 3) float64 array in nm (or nm/ps) from an OpenMM Quantity, a list of Vec3
    Quantities, or anything array-like already in nm."""
    if hasattr(values, "value_in_unit"):
        import openmm.unit as u

        values = values.value_in_unit(u.nanometer / u.picosecond if per_ps else u.nanometer)
    elif len(values) and hasattr(values[0], "value_in_unit"):  # a list of Quantity Vec3s
        return np.stack([in_nm(v, per_ps) for v in values])
    return np.asarray([tuple(v) for v in values] if len(values) and not np.isscalar(values[0]) else values,
                      dtype=np.float64)


def number(value) -> float:
    """A number in OpenMM's default units (nm, ps, kJ/mol, rad, e, amu), Quantity or not."""
    if hasattr(value, "value_in_unit_system"):
        import openmm.unit

        return float(value.value_in_unit_system(openmm.unit.md_unit_system))
    return float(value)


def as_jax(values, dtype=None):
    """A JAX float array (float64 when x64 is on, else float32) or one of `dtype`."""
    import jax.numpy as jnp

    array = jnp.asarray(np.asarray(values, dtype=np.float64))
    return array.astype(dtype) if dtype is not None else array


def box_sides(vectors) -> np.ndarray:
    """(3,) sides in nm of a rectangular box given as three vectors; a triclinic box is refused."""
    matrix = in_nm(vectors).reshape(3, 3)
    off_diagonal = matrix[~np.eye(3, dtype=bool)]
    if np.any(np.abs(off_diagonal) > 1e-12 * np.abs(matrix).max()):
        raise ValueError(f"the box is triclinic (box vectors {matrix.tolist()} nm); diffmd supports rectangular "
                         "boxes only")
    return np.diag(matrix).copy()


__all__ = ["as_jax", "box_sides", "in_nm", "number"]
