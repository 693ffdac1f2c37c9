"""A System whose numbers are gathered from a force field's parameter pytree.

`ForceFieldBinding` holds the pytree (`parameters`, differentiable leaves) and, static, the index
of the entry behind every per-atom value and every term. `bind(system, parameters)` gathers
them into the System's atoms and terms, inside the traced computation, so `jax.grad` of any
loss of `system.with_parameters(p)` lands on every number of the force field:

    q_i = charge[entry(i)]  (per residue-template atom, or per atom type)
    σ_i, ε_i = sigma[type(i)], epsilon[type(i)];   m_i = mass[type(i)]
    1-4 exception (i, j): q_ij = coulomb14scale·q_i·q_j, σ_ij = (σ_i + σ_j)/2,
                          ε_ij = lj14scale·√(ε_i ε_j)   (OpenMM's createExceptionsFromBonds)
    bonds, angles, torsions, RB torsions: their entry's numbers; CMAP: the maps themselves.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._static import StaticArray
from ..forces import CMAPTorsions, HarmonicAngles, HarmonicBonds, NonbondedExceptions, PeriodicTorsions, RBTorsions
from ..forces.mixing import safe_sqrt


@dataclasses.dataclass(frozen=True)
class _Index:
    """Static index arrays (hashable), one per kind of number; None where absent."""

    atom_type: StaticArray | None
    nonbonded_entry: StaticArray | None
    charge_from_type: StaticArray | None
    charge_index: StaticArray | None
    terms: tuple  # ((position in bonded_inters, section, StaticArray of entries or None), ...)
    exceptions: tuple | None  # (position, StaticArray is_14)


_TERM_SECTIONS = {HarmonicBonds: "HarmonicBondForce", HarmonicAngles: "HarmonicAngleForce",
                  PeriodicTorsions: "PeriodicTorsionForce", RBTorsions: "RBTorsionForce",
                  CMAPTorsions: "CMAPTorsionForce"}


def _static(values):
    return None if values is None else StaticArray(np.asarray(values))


class ForceFieldBinding(eqx.Module):
    """The force field's numbers (`parameters`) and where each goes in the System (static)."""

    parameters: dict
    index: _Index = eqx.field(static=True)

    @classmethod
    def build(cls, system, parameters: dict, decoded: dict) -> ForceFieldBinding:
        terms, exceptions = [], None
        seen: dict[str, int] = {}  # section -> how many of its terms came before
        for position, term in enumerate(system.bonded_inters):
            kind = type(term)
            if kind is NonbondedExceptions:
                exceptions = (position, StaticArray(decoded["exception_is_14"]))
                continue
            section = _TERM_SECTIONS.get(kind)
            if section is None:
                continue
            occurrence = seen[section] = seen.get(section, -1) + 1
            if kind is CMAPTorsions:
                terms.append((position, section, None))
                continue
            labels = decoded[section][occurrence]
            if labels is not None:  # else its numbers are not the force field's entries: they stay as they are
                terms.append((position, section, StaticArray(labels)))
        index = _Index(atom_type=_static(decoded.get("atom_type")),
                       nonbonded_entry=_static(decoded.get("nonbonded_entry")),
                       charge_from_type=_static(decoded.get("charge_from_type")),
                       charge_index=_static(decoded.get("charge_index")),
                       terms=tuple(terms), exceptions=exceptions)
        return cls(parameters=parameters, index=index)

    def bind(self, system, parameters: dict):
        """`system` with every force-field number gathered from `parameters` (same structure as
        `self.parameters`), and `parameters` kept as the binding's own."""
        index, p = self.index, parameters
        dtype = system.coords.dtype
        take = lambda table, at: jnp.asarray(table, dtype)[jnp.asarray(at.array)]  # noqa: E731
        per_atom = {}
        if index.atom_type is not None:
            per_atom["mass"] = take(p["AtomTypes"]["mass"], index.atom_type)
        if index.nonbonded_entry is not None:
            nb = p["NonbondedForce"]
            per_atom["sigma"] = take(nb["sigma"], index.nonbonded_entry)
            per_atom["epsilon"] = take(nb["epsilon"], index.nonbonded_entry)
            from_type, charge_index = index.charge_from_type.array, index.charge_index.array
            by_type = take(nb["charge"], StaticArray(np.where(from_type, charge_index, 0)))
            residues = p.get("Residues", {}).get("charge")
            if residues is None:
                per_atom["charge"] = by_type
            else:
                by_residue = take(residues, StaticArray(np.where(from_type, 0, charge_index)))
                per_atom["charge"] = jnp.where(jnp.asarray(from_type), by_type, by_residue)
        atoms = system.atoms.replace(**per_atom)

        replacements = []  # (getter, value)
        for position, section, entries in index.terms:
            values = p[section]
            term = system.bonded_inters[position]

            def gathered(table, field, entries=entries, term=term):
                """The term's `field` from the table's entries; terms with entry −1 keep theirs."""
                at = entries.array
                keep = at < 0
                new = jnp.asarray(table, dtype)[jnp.asarray(np.where(keep, 0, at))]
                if not keep.any():
                    return new
                mask = jnp.asarray(keep).reshape(keep.shape + (1,) * (new.ndim - 1))
                return jnp.where(mask, jnp.asarray(getattr(term, field), dtype), new)

            if section == "CMAPTorsionForce":
                updates = {"maps": jnp.asarray(values["map"], dtype)}
            elif section == "HarmonicBondForce":
                updates = {"r0": gathered(values["length"], "r0"), "k": gathered(values["k"], "k")}
            elif section == "HarmonicAngleForce":
                updates = {"theta0": gathered(values["angle"], "theta0"), "k": gathered(values["k"], "k")}
            elif section == "PeriodicTorsionForce":
                updates = {"phase": gathered(values["phase"], "phase"), "k": gathered(values["k"], "k")}
            else:
                updates = {"coefficients": gathered(values["c"], "coefficients")}
            for field, value in updates.items():
                replacements.append((lambda s, pos=position, f=field: getattr(s.bonded_inters[pos], f), value))
        if index.exceptions is not None:
            position, is_14 = index.exceptions
            term = system.bonded_inters[position]
            i, j = (jnp.asarray(term.indices.array[:, c]) for c in (0, 1))
            mask = jnp.asarray(is_14.array)
            q, s, e = per_atom["charge"], per_atom["sigma"], per_atom["epsilon"]
            nb = p["NonbondedForce"]
            scale_q, scale_lj = (jnp.asarray(nb[k], dtype) for k in ("coulomb14scale", "lj14scale"))
            zero = jnp.zeros((), dtype)
            updates = {"charge_prod": jnp.where(mask, scale_q * q[i] * q[j], zero),
                       "sigma": jnp.where(mask, 0.5 * (s[i] + s[j]), zero),
                       "epsilon": jnp.where(mask, scale_lj * safe_sqrt(e[i] * e[j]), zero)}
            for field, value in updates.items():
                replacements.append((lambda s_, pos=position, f=field: getattr(s_.bonded_inters[pos], f), value))

        system = eqx.tree_at(lambda s: s.atoms, system, atoms)
        for getter, value in replacements:
            system = eqx.tree_at(getter, system, value)
        return eqx.tree_at(lambda s: s.force_field.parameters, system, parameters)


__all__ = ["ForceFieldBinding"]
