"""Per-atom properties: masses and an open table of named parameters, per atom or per type."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._checks import concrete_or_none
from ._static import StaticArray


def _float(value, dtype=None) -> Array:
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        return value
    return value.astype(dtype or jnp.result_type(float))


class Atoms(eqx.Module):
    """N atoms: a mass each and any named per-atom parameters (σ, ε, charge, a Buckingham A, a
    GB radius…), given per atom or through atom types. Every value is a differentiable leaf.

    Per atom:  `Atoms(mass, charge=q, sigma=s, epsilon=e, A=a)` — each an (N,) array.
    Typed:     `Atoms(types=t, per_type={"mass": m, "sigma": s, "epsilon": e}, charge=q)` — t is
               (N,) integer type indices (static, like all topology), each per-type table (T,);
               the per-atom values are gathered from the tables, so `jax.grad` of a loss lands
               on the per-type numbers. Any parameter (mass too) may be per atom or per type.

    `atoms.sigma` or `atoms["sigma"]` gives the (N,) per-atom values either way; a name the
    atoms do not have raises an error that lists the ones they do. Units are the caller's:
    OpenMM's (amu, e, nm, kJ/mol) with the built-in interactions.

    The reference's `Atom(name, resname, resnum, chain, charge, mass, σ, ε)` per atom becomes one
    `Atoms` holding arrays; `Atoms.uniform(N, mass, sigma=…)` builds N identical atoms.
    """

    per_atom: dict
    per_type: dict
    types: StaticArray | None = eqx.field(static=True)

    def __init__(self, mass=None, *, types=None, per_type=None, **per_atom):
        per_type = dict(per_type or {})
        if mass is not None:
            per_atom = {"mass": mass, **per_atom}
        per_atom = {name: value for name, value in per_atom.items() if value is not None}
        if "mass" not in per_atom and "mass" not in per_type:
            raise ValueError("Atoms: give a mass per atom (mass=...) or per type (per_type={'mass': ...})")
        both = sorted(set(per_atom) & set(per_type))
        if both:
            raise ValueError(f"Atoms: {both} given both per atom and per type; give each parameter once")
        self.types = None
        if per_type or types is not None:
            if types is None:
                raise ValueError("Atoms: per_type tables need types=(one type index per atom)")
            types = np.asarray(types)
            if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer) or (types.size and types.min() < 0):
                raise ValueError(f"Atoms: types must be a 1-D array of non-negative integers, got {types.dtype} "
                                 f"shape {types.shape}")
            self.types = StaticArray(types)
        reference = per_atom["mass"] if "mass" in per_atom else None
        dtype = None
        if reference is not None:
            reference = jnp.asarray(reference)
            dtype = reference.dtype if jnp.issubdtype(reference.dtype, jnp.floating) else None
        self.per_atom = {name: _float(value, dtype) for name, value in per_atom.items()}
        self.per_type = {name: _float(value, dtype) for name, value in per_type.items()}

    def __check_init__(self):
        n = self.n_atoms
        for name, value in self.per_atom.items():
            if name == "mass" and value.ndim != 1:
                raise ValueError(f"Atoms: mass must be a 1-D array (one entry per atom), got shape {value.shape}")
            if value.shape != (n,):
                raise ValueError(f"Atoms: {name} has shape {value.shape} but there are {n} atoms; give one {name} "
                                 "per atom (use Atoms.uniform for identical atoms)")
        if self.types is not None:
            n_types = int(self.types.array.max()) + 1 if n else 0
            for name, table in self.per_type.items():
                if table.ndim != 1 or table.shape[0] < n_types:
                    raise ValueError(f"Atoms: per-type table {name!r} has shape {table.shape}, but types go up to "
                                     f"{n_types - 1}: give one value per type")
        self._check_values()

    def _check_values(self):
        """Concrete values: positive masses, no NaN in any parameter (traced ones are checked
        inside the compiled run: `diffmd.run.checks`)."""
        for name in self.names:
            raw = self.per_atom.get(name, self.per_type.get(name))
            values = concrete_or_none(raw)
            if values is None:
                continue
            where = "per type" if name in self.per_type else "atom"
            if name == "mass" and not np.all(values > 0):
                bad = int(np.argmax(~(values > 0)))
                raise ValueError(f"Atoms: mass must be positive, {where} {bad} has mass {values[bad]}")
            if np.any(np.isnan(values)):
                bad = int(np.argmax(np.isnan(values)))
                raise ValueError(f"Atoms: {name} is NaN ({where} {bad})")

    # ---- the table ---------------------------------------------------------------------

    @property
    def n_atoms(self) -> int:
        if self.types is not None:
            return self.types.shape[0]
        return self.per_atom["mass"].shape[0]

    def __len__(self) -> int:
        return self.n_atoms

    @property
    def names(self) -> tuple[str, ...]:
        """Every parameter name, per atom or per type (mass included)."""
        return tuple(self.per_atom) + tuple(self.per_type)

    def __contains__(self, name: str) -> bool:
        return name in self.per_atom or name in self.per_type

    def __getitem__(self, name: str) -> Array:
        """(N,) values of a parameter, gathered from its type table if it is per type."""
        if name in self.per_atom:
            return self.per_atom[name]
        if name in self.per_type:
            return self.per_type[name][jnp.asarray(self.types.array)]
        raise KeyError(f"the atoms have no parameter {name!r}; they have {', '.join(self.names)}")

    def __getattr__(self, name: str):
        # Called only when normal lookup fails: parameters read as attributes (atoms.sigma).
        if name.startswith("_") or name in ("per_atom", "per_type", "types"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(error.args[0]) from None

    @property
    def mass(self) -> Array:
        return self["mass"]

    def replace(self, **per_atom) -> "Atoms":
        """A copy with per-atom parameters added or replaced (a per-type one becomes per atom)."""
        table = {name: value for name, value in self.per_type.items() if name not in per_atom}
        types = None if self.types is None else self.types.array
        return Atoms(types=types, per_type=table, **{**self.per_atom, **per_atom})

    @classmethod
    def uniform(cls, n_atoms: int, mass, dtype=None, **params) -> "Atoms":
        """N identical atoms from scalars (which may be traced, e.g. a σ being learned):
        `Atoms.uniform(100, mass=10.0, sigma=0.3, epsilon=0.2)`."""
        dtype = dtype or jnp.result_type(mass, *params.values(), float)
        full = lambda v: jnp.full((n_atoms,), v, dtype=dtype)  # noqa: E731
        return cls(mass=full(mass), **{name: full(value) for name, value in params.items()})


def any_nan(atoms: Atoms) -> Array:
    """True if any parameter value is NaN (for checks inside compiled code)."""
    leaves = jax.tree_util.tree_leaves((atoms.per_atom, atoms.per_type))
    return jnp.any(jnp.stack([jnp.any(jnp.isnan(leaf)) for leaf in leaves])) if leaves else jnp.asarray(False)
