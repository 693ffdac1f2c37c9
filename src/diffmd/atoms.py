"""Per-atom properties."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import concrete_or_none


class Atoms(eqx.Module):
    """Properties of N atoms, one array entry per atom; every field is a differentiable leaf.

    Attributes:
        mass: (N,) masses (amu, or reduced units).
        charge: (N,) partial charges (e).
        sigma: (N,) Lennard-Jones σ (nm).
        epsilon: (N,) Lennard-Jones well depth ε (kJ/mol).

    The reference's `Atom(name, resname, resnum, chain, charge, mass, σ, ε)` per atom becomes
    one `Atoms` holding arrays; `Atoms.uniform` builds N identical atoms from scalars.
    """

    mass: Array
    charge: Array
    sigma: Array
    epsilon: Array

    def __init__(self, mass, charge=None, sigma=None, epsilon=None):
        mass = jnp.asarray(mass)
        if mass.ndim != 1:
            raise ValueError(f"Atoms: mass must be a 1-D array (one entry per atom), got shape {mass.shape}")
        n = mass.shape[0]
        dtype = mass.dtype if jnp.issubdtype(mass.dtype, jnp.floating) else jnp.result_type(float)
        self.mass = mass.astype(dtype)

        def field(name, value):
            if value is None:
                return jnp.zeros(n, dtype)
            value = jnp.asarray(value)
            if value.shape != (n,):
                raise ValueError(
                    f"Atoms: {name} has shape {value.shape} but mass has {n} atoms; "
                    f"give one {name} per atom (use Atoms.uniform for identical atoms)"
                )
            return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(dtype)

        self.charge = field("charge", charge)
        self.sigma = field("sigma", sigma)
        self.epsilon = field("epsilon", epsilon)
        m = concrete_or_none(self.mass)
        if m is not None and not np.all(m > 0):
            bad = int(np.argmax(~(m > 0)))
            raise ValueError(f"Atoms: mass must be positive, atom {bad} has mass {m[bad]}")

    @classmethod
    def uniform(cls, n_atoms: int, mass, charge=0.0, sigma=0.0, epsilon=0.0, dtype=None) -> "Atoms":
        """N identical atoms from scalar properties (scalars may be traced, e.g. a σ being learned)."""
        dtype = dtype or jnp.result_type(mass, charge, sigma, epsilon, float)
        full = lambda v: jnp.full((n_atoms,), v, dtype=dtype)
        return cls(mass=full(mass), charge=full(charge), sigma=full(sigma), epsilon=full(epsilon))

    @property
    def n_atoms(self) -> int:
        return self.mass.shape[0]

    def __len__(self) -> int:
        return self.n_atoms
