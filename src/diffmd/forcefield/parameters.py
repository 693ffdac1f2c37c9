"""The numbers of a force field as one pytree, and which of them each term of a System uses.

`ParameterTables.of(openmm_ff, trees)` reads the entries OpenMM's generators registered and
lays their numbers out as a dict of dicts of arrays that mirrors the XML:

    AtomTypes            mass (T,)                        one per <Type>
    HarmonicBondForce    length, k (B,)                   one per <Bond>
    HarmonicAngleForce   angle, k (A,)                    one per <Angle>
    PeriodicTorsionForce k, phase (P,)                    one per periodicity of each <Proper>,
                                                          then of each <Improper>
    RBTorsionForce       c (R, 6)                         <Proper>s, then <Improper>s
    CMAPTorsionForce     map (M, G, G)                    one per <Map>, OpenMM's (φ, ψ) grid
    NonbondedForce       sigma, epsilon, charge (E,),     one per <Atom> (charge 0 where the
                         coulomb14scale, lj14scale ()     charge comes from the residue)
    Residues             charge (C,)                      one per <Atom> of every <Residue>

Which entry each atom and term of a System uses is read from OpenMM itself: `tagged` swaps
every number for a label that identifies its entry (entry k ↦ k + 1), `ForceField.createSystem`
runs once with the labels in place (so template matching, typing, wildcards and torsion
ordering are exactly OpenMM's), and `decode` reads the labels back out of the openmm.System.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from ..forces import CMAPTorsions


def _generator(openmm_ff, name):
    found = [g for g in openmm_ff._forces if type(g).__name__ == name]
    return found[0] if found else None


@dataclasses.dataclass
class ParameterTables:
    """The force field's numbers (`values`, a dict of dicts of numpy float64 arrays), the
    OpenMM objects they came from, the XML elements they go back to, and labels."""

    values: dict
    labels: dict
    sources: dict  # what `tagged` edits: generators, entries, template atoms
    elements: dict  # (section, field) -> list of (element, attribute-name function)

    @classmethod
    def of(cls, ff, found) -> ParameterTables:
        values, labels, sources, elements = {}, {}, {}, {}
        types = list(ff._atomTypes.values())
        if types:
            values["AtomTypes"] = {"mass": np.array([t.mass for t in types])}
            labels["AtomTypes"] = [t.name for t in types]
            sources["AtomTypes"] = types
            by_name = {}
            for element in found.get(("AtomTypes", "Type"), []):
                by_name.setdefault(element.attrib["name"], []).append(element)
            elements["AtomTypes"] = [by_name.get(t.name, []) for t in types]

        for section, fields, tag in (("HarmonicBondForce", ("length", "k"), "Bond"),
                                     ("HarmonicAngleForce", ("angle", "k"), "Angle")):
            generator = _generator(ff, section.replace("Force", "Generator"))
            if generator is None or not generator.k:
                continue
            values[section] = {f: np.array(getattr(generator, f), dtype=np.float64) for f in fields}
            listed = found.get((section, tag), [])
            _check(section, [[float(e.attrib[f]) for f in fields] for e in listed],
                   np.stack([values[section][f] for f in fields], axis=1))
            elements[section] = [[e] for e in listed]
            labels[section] = [_label(e) for e in listed]
            sources[section] = generator

        generator = _generator(ff, "PeriodicTorsionGenerator")
        if generator is not None and (generator.proper or generator.improper):
            rows, k, phase, listed = [], [], [], []
            for kind, tag in (("proper", "Proper"), ("improper", "Improper")):
                elements_of_kind = found.get(("PeriodicTorsionForce", tag), [])
                definitions = getattr(generator, kind)
                if len(elements_of_kind) != len(definitions):
                    raise _mismatch("PeriodicTorsionForce")
                for entry, (definition, element) in enumerate(zip(definitions, elements_of_kind)):
                    for term in range(len(definition.k)):
                        rows.append((kind, entry, term))
                        k.append(definition.k[term])
                        phase.append(definition.phase[term])
                        listed.append(element)
                        if float(element.attrib[f"k{term + 1}"]) != definition.k[term]:
                            raise _mismatch("PeriodicTorsionForce")
            values["PeriodicTorsionForce"] = {"k": np.array(k), "phase": np.array(phase)}
            labels["PeriodicTorsionForce"] = [f"{_label(e)} n={t + 1}" for e, (_, _, t) in zip(listed, rows)]
            elements["PeriodicTorsionForce"] = [[(e, t)] for e, (_, _, t) in zip(listed, rows)]
            sources["PeriodicTorsionForce"] = (generator, rows)

        generator = _generator(ff, "RBTorsionGenerator")
        if generator is not None and (generator.proper or generator.improper):
            definitions = list(generator.proper) + list(generator.improper)
            listed = found.get(("RBTorsionForce", "Proper"), []) + found.get(("RBTorsionForce", "Improper"), [])
            values["RBTorsionForce"] = {"c": np.array([d.c for d in definitions], dtype=np.float64).reshape(-1, 6)}
            _check("RBTorsionForce", [[float(e.attrib[f"c{i}"]) for i in range(6)] for e in listed],
                   values["RBTorsionForce"]["c"])
            labels["RBTorsionForce"] = [_label(e) for e in listed]
            elements["RBTorsionForce"] = [[e] for e in listed]
            sources["RBTorsionForce"] = (generator, len(generator.proper))

        generator = _generator(ff, "CMAPTorsionGenerator")
        if generator is not None and generator.maps:
            sizes = {int(round(np.sqrt(len(m)))) for m in generator.maps}
            if len(sizes) > 1:
                raise ValueError(f"ForceField: CMAP maps of different sizes {sorted(sizes)} are not supported")
            size = sizes.pop()
            values["CMAPTorsionForce"] = {"map": np.stack([CMAPTorsions.map_from_openmm(size, m) for m in generator.maps])}
            listed = found.get(("CMAPTorsionForce", "Map"), [])
            if len(listed) != len(generator.maps):
                raise _mismatch("CMAPTorsionForce")
            labels["CMAPTorsionForce"] = [f"map {i}" for i in range(len(listed))]
            elements["CMAPTorsionForce"] = [[e] for e in listed]
            sources["CMAPTorsionForce"] = generator

        generator = _generator(ff, "NonbondedGenerator")
        if generator is not None:
            table = generator.params.paramsForType
            entries, owner = [], {}
            for values_of_type in table.values():
                if id(values_of_type) not in owner:
                    owner[id(values_of_type)] = len(entries)
                    entries.append(values_of_type)
            per_entry = [[] for _ in entries]
            for element in found.get(("NonbondedForce", "Atom"), []):
                names = ff._findAtomTypes(element.attrib, 1)[0]
                entry = owner.get(id(table[next(iter(names))]))
                if entry is not None:
                    per_entry[entry].append(element)
            values["NonbondedForce"] = {
                "sigma": np.array([e["sigma"] for e in entries], dtype=np.float64),
                "epsilon": np.array([e["epsilon"] for e in entries], dtype=np.float64),
                "charge": np.array([e.get("charge", 0.0) for e in entries], dtype=np.float64),
                "coulomb14scale": np.float64(generator.coulomb14scale),
                "lj14scale": np.float64(generator.lj14scale),
            }
            labels["NonbondedForce"] = [_label(e[-1]) if e else "?" for e in per_entry]
            elements["NonbondedForce"] = per_entry
            elements["NonbondedForce.section"] = found.get(("NonbondedForce", "section"), [])
            sources["NonbondedForce"] = (generator, entries)

            template_atoms, template_labels, template_elements = [], [], []
            residue_elements = {}
            for element in found.get(("Residues", "Residue"), []):
                residue_elements.setdefault(element.attrib["name"], element)
            for name, template in ff._templates.items():
                element = residue_elements.get(name)
                atom_elements = {a.attrib["name"]: a for a in element.findall("Atom")} if element is not None else {}
                for atom in template.atoms:
                    if "charge" in atom.parameters:
                        template_atoms.append(atom)
                        template_labels.append(f"{name}:{atom.name}")
                        template_elements.append([atom_elements[atom.name]] if atom.name in atom_elements else [])
            # Patches (CHARMM's terminal and disulfide patches) give the atoms they add or change
            # charges of their own: entries of the same table, labelled "patch:atom".
            patch_elements = {e.attrib["name"]: e for e in found.get(("Patches", "Patch"), [])}
            for name, patch in ff._patches.items():
                element = patch_elements.get(name)
                children = {}
                for child in ([] if element is None else list(element)):
                    if child.tag in ("AddAtom", "ChangeAtom"):
                        residue, _, atom_name = child.attrib["name"].rpartition(":")
                        children[(child.tag, int(residue or 0), atom_name)] = child
                for tag, per_residue in (("AddAtom", patch.addedAtoms), ("ChangeAtom", patch.changedAtoms)):
                    for residue, atoms in enumerate(per_residue):
                        for atom in atoms:
                            if "charge" in atom.parameters:
                                template_atoms.append(atom)
                                template_labels.append(f"patch {name}:{atom.name}")
                                child = children.get((tag, residue, atom.name))
                                template_elements.append([child] if child is not None else [])
            if template_atoms:
                values["Residues"] = {"charge": np.array([a.parameters["charge"] for a in template_atoms])}
                labels["Residues"] = template_labels
                elements["Residues"] = template_elements
                sources["Residues"] = template_atoms
        return cls(values, labels, sources, elements)


def _label(element) -> str:
    keys = [k for k in element.attrib if k.startswith(("type", "class"))]
    return " ".join(f"{k}={element.attrib[k]}" for k in sorted(keys)) or element.attrib.get("name", "?")


def _check(section, from_xml, registered):
    if len(from_xml) != len(registered) or (len(from_xml) and not np.array_equal(np.asarray(from_xml), registered)):
        raise _mismatch(section)


def _mismatch(section):
    return RuntimeError(f"ForceField: the {section} entries OpenMM registered do not line up with the XML elements "
                        "(an unusual file layout); diffmd cannot map their numbers back to the file")


@contextlib.contextmanager
def tagged(tables: ParameterTables):
    """Within the block, every number `decode` reads is replaced by the label of its entry."""
    undo = []

    def swap(obj, attribute, value):
        undo.append((obj, attribute, getattr(obj, attribute)))
        setattr(obj, attribute, value)

    try:
        s = tables.sources
        for i, atom_type in enumerate(s.get("AtomTypes", [])):
            swap(atom_type, "mass", float(i + 1))
        for section, field in (("HarmonicBondForce", "length"), ("HarmonicAngleForce", "angle")):
            if section in s:
                n = len(getattr(s[section], field))
                swap(s[section], field, [float(i + 1) for i in range(n)])
                swap(s[section], "k", [1.0] * n)  # a zero k would drop the term
        if "PeriodicTorsionForce" in s:
            generator, rows = s["PeriodicTorsionForce"]
            for row, (kind, entry, term) in enumerate(rows):
                definition = getattr(generator, kind)[entry]
                if term == 0:
                    swap(definition, "k", list(definition.k))
                definition.k[term] = float(row + 1)
        if "RBTorsionForce" in s:
            generator, _ = s["RBTorsionForce"]
            for row, definition in enumerate(list(generator.proper) + list(generator.improper)):
                swap(definition, "c", [float(row + 1), 0.0, 0.0, 0.0, 0.0, 0.0])
        if "NonbondedForce" in s:
            generator, entries = s["NonbondedForce"]
            labelled = {id(e): {"sigma": float(k + 1), "epsilon": 1.0,
                                **({"charge": float(k + 1)} if "charge" in e else {})} for k, e in enumerate(entries)}
            swap(generator.params, "paramsForType",
                 {t: labelled[id(v)] for t, v in generator.params.paramsForType.items()})
        for k, atom in enumerate(s.get("Residues", [])):
            swap(atom, "parameters", {**atom.parameters, "charge": -float(k + 1)})
        yield
    finally:
        for obj, attribute, value in reversed(undo):
            setattr(obj, attribute, value)


def _labels_of(values, what) -> np.ndarray:
    """Entry indices from labels (k + 1 ↦ k); an error if a number was not a label."""
    values = np.asarray(values, dtype=np.float64)
    index = np.rint(np.abs(values)).astype(np.int64) - 1
    if len(values) and (np.any(np.abs(np.abs(values) - (index + 1)) > 1e-6) or np.any(index < 0)):
        raise ValueError(f"ForceField: some {what} did not come from the force field's own entries (a residue "
                         "template generator or a patched template supplied them); diffmd cannot differentiate them")
    return index


def _term_labels(values, ks, what):
    """Entry indices of a listed force's terms, −1 for a term whose numbers are not labels (its
    k is not the label value 1: CHARMM's Urey-Bradley terms, which openmm.app's
    AmoebaUreyBradleyGenerator adds to the same HarmonicBondForce, keep their numbers), or None
    if no term is labelled."""
    labelled = np.asarray(ks, dtype=np.float64) == 1.0
    if not labelled.any():
        return None
    index = np.full(len(labelled), -1, np.int64)
    index[labelled] = _labels_of(np.asarray(values, dtype=np.float64)[labelled], what)
    return index


def decode(tagged_system, tables: ParameterTables) -> dict:
    """{what: index arrays}: the entry behind every per-atom value and every term of a System
    created under `tagged`, in the openmm.System's order. Listed forces give a list, one item
    per force of that class in the System (see `_term_labels`)."""
    import openmm

    out = {}
    n = tagged_system.getNumParticles()
    if "AtomTypes" in tables.values:
        masses = [tagged_system.getParticleMass(i).value_in_unit(openmm.unit.dalton) for i in range(n)]
        try:
            out["atom_type"] = _labels_of(masses, "masses")
        except ValueError:  # hydrogen mass repartitioning changed them: masses stay fixed numbers
            out["atom_type"] = None
    for force in tagged_system.getForces():
        kind = type(force).__name__
        if kind == "HarmonicBondForce":
            rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
            out.setdefault(kind, []).append(_term_labels([r[2]._value for r in rows], [r[3]._value for r in rows],
                                                         "bonds"))
        elif kind == "HarmonicAngleForce":
            rows = [force.getAngleParameters(a) for a in range(force.getNumAngles())]
            out.setdefault(kind, []).append(_term_labels([r[3]._value for r in rows], [r[4]._value for r in rows],
                                                         "angles"))
        elif kind == "PeriodicTorsionForce":
            out.setdefault(kind, []).append(
                _labels_of([force.getTorsionParameters(t)[6]._value for t in range(force.getNumTorsions())],
                           "torsions"))
        elif kind == "RBTorsionForce":
            out.setdefault(kind, []).append(
                _labels_of([force.getTorsionParameters(t)[4]._value for t in range(force.getNumTorsions())],
                           "RB torsions"))
        elif kind == "NonbondedForce":
            table = np.array([[q._value, s._value] for q, s, _ in
                              (force.getParticleParameters(i) for i in range(force.getNumParticles()))]).reshape(-1, 2)
            out["nonbonded_entry"] = _labels_of(table[:, 1], "σ and ε")
            from_type = table[:, 0] > 0
            charge_index = _labels_of(table[:, 0], "charges")
            out["charge_from_type"] = from_type
            out["charge_index"] = charge_index
            exceptions = [force.getExceptionParameters(k) for k in range(force.getNumExceptions())]
            out["exception_is_14"] = np.array([e[2]._value != 0 or e[4]._value != 0 for e in exceptions], dtype=bool)
    return out


__all__ = ["ParameterTables", "decode", "tagged"]
