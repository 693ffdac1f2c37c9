"""`diffmd.ForceField`: OpenMM force-field XML files, differentiable in every number.

    ff = diffmd.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = ff.create_system("protein.pdb", nonbonded_method="PME", nonbonded_cutoff=0.9)
    grad = jax.grad(lambda p: loss(system.with_parameters(p)))(ff.parameters)
    ff.write_xml(trained, "trained.xml")   # OpenMM loads it

openmm.app parses the files and structures, matches residue templates and types atoms:
`create_system` calls `openmm.app.ForceField.createSystem` twice, once as it is (the reference
System, from which structure-dependent settings are taken) and once with every number replaced
by the label of its entry (`parameters.tagged`), which tells which entry each atom and term uses.
"""

from __future__ import annotations

import copy
import os

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._optional import require
from .binding import ForceFieldBinding
from .openmm_system import TERM_ROWS, constraints_of, from_openmm, term_rows
from .parameters import ParameterTables, decode, tagged
from .quantities import in_nm, number
from .xml_files import load_trees, registered_elements, write_trees

NONBONDED_METHODS = ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME")
CONSTRAINTS = (None, "HBonds", "AllBonds", "HAngles")


class ForceField:
    """Force-field XML files (OpenMM's bundled names, or paths) and their numbers.

    Attributes:
        parameters: the numbers of the files as a dict of dicts of arrays (see
            `diffmd.forcefield.parameters`): the pytree to differentiate and train.
        labels: for each section, a label per entry (atom classes or types, template atoms).
        openmm: the underlying `openmm.app.ForceField`.
    """

    def __init__(self, *files):
        app = require("openmm.app", "ForceField (OpenMM force-field XML files)")

        if not files:
            raise ValueError("ForceField: give at least one force-field XML file")
        self.files = tuple(os.fspath(f) for f in files)
        self.openmm = app.ForceField(*self.files)
        self._trees = load_trees(self.files)
        self._tables = ParameterTables.of(self.openmm, registered_elements(self.openmm, self._trees))
        self.parameters = _as_jax(self._tables.values)
        self.labels = self._tables.labels

    def create_system(self, structure, nonbonded_method: str = "NoCutoff", nonbonded_cutoff=1.0,
                      constraints=None, rigid_water=None, remove_cm_motion: bool = True, hydrogen_mass=None,
                      switch_distance=None, ewald_error_tolerance: float = 5e-4, dispersion_correction=None,
                      residue_templates=None, *, parameters=None, velocities=None, dtype=None):
        """A diffmd System for `structure` with this force field (keywords as OpenMM's
        `createSystem`, in snake case, with its defaults; lengths in nm or Quantities).

        Args:
            structure: a PDB or PDBx/mmCIF path, an openmm.app PDBFile/PDBxFile, or a
                (Topology, positions) pair.
            nonbonded_method: "NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic" (reaction
                field), "Ewald" or "PME".
            dispersion_correction: None keeps the force field's setting (OpenMM's default: on).
            parameters: the numbers to use (default `self.parameters`).
        Returns:
            A System (OpenMM's atom order) whose force-field numbers come from `parameters`;
            `system.with_parameters(p)` swaps them, differentiably.
        """
        import openmm
        from openmm import app

        topology, positions = _structure(structure)
        if nonbonded_method not in NONBONDED_METHODS:
            raise ValueError(f"create_system: nonbonded_method must be one of {NONBONDED_METHODS}, "
                             f"got {nonbonded_method!r}")
        if isinstance(constraints, str) or constraints is None:
            if constraints not in CONSTRAINTS:
                raise ValueError(f"create_system: constraints must be one of {CONSTRAINTS}, got {constraints!r}")
            constraints = None if constraints is None else getattr(app, constraints)
        if nonbonded_method not in ("NoCutoff", "CutoffNonPeriodic") and topology.getPeriodicBoxVectors() is None:
            raise ValueError(f"create_system: nonbonded_method={nonbonded_method!r} needs a periodic box, but the "
                             "structure has none (give the PDB a CRYST1 record, or call "
                             "topology.setPeriodicBoxVectors, or use 'NoCutoff')")
        args = dict(nonbondedMethod=getattr(app, nonbonded_method), nonbondedCutoff=number(nonbonded_cutoff),
                    constraints=constraints, rigidWater=rigid_water, removeCMMotion=remove_cm_motion,
                    hydrogenMass=hydrogen_mass, switchDistance=None if switch_distance is None else number(switch_distance),
                    ewaldErrorTolerance=ewald_error_tolerance, residueTemplates=dict(residue_templates or {}))
        if dispersion_correction is not None:
            args["useDispersionCorrection"] = bool(dispersion_correction)
        try:
            reference = self.openmm.createSystem(topology, **args)
        except ValueError as error:
            if "template" in str(error).lower():
                self._check_templates(topology)  # a clearer message where one residue matches nothing
            raise
        with tagged(self._tables):
            labelled = self.openmm.createSystem(topology, **args)
        decoded = decode(labelled, self._tables)
        system = from_openmm(labelled, positions, velocities=velocities, dtype=dtype)
        if hydrogen_mass is not None:  # repartitioned masses are OpenMM's numbers, not the file's
            decoded["atom_type"] = None
            masses = np.array([reference.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                               for i in range(reference.getNumParticles())])
            system = eqx.tree_at(lambda s: s.atoms, system,
                                 system.atoms.replace(mass=jnp.asarray(masses, system.coords.dtype)))
        if reference.getNumConstraints():  # the labelled system's distances are labels
            system = eqx.tree_at(lambda s: s.constraints, system,
                                 constraints_of(reference, np.zeros(0, np.int64), system.coords.dtype,
                                                np.asarray(system.coords)))
        parameters = self.parameters if parameters is None else parameters
        binding = ForceFieldBinding.build(system, parameters, decoded)
        system = binding.bind(_with_binding(system, binding), parameters)
        _check_against(system, reference)
        return system

    def _check_templates(self, topology):
        """Raise an error naming the first residue no template matches (OpenMM's own search
        ignores patches, so this runs only after createSystem failed)."""
        unmatched = self.openmm.getUnmatchedResidues(topology)
        if unmatched:
            residue = unmatched[0]
            atoms = ", ".join(a.name for a in residue.atoms())
            more = f" (and {len(unmatched) - 1} more residues)" if len(unmatched) > 1 else ""
            raise ValueError(f"create_system: no template in {', '.join(self.files)} matches residue {residue.index} "
                             f"({residue.name}, chain {residue.chain.id}) with atoms [{atoms}]{more}. If hydrogens "
                             "are missing, add them with openmm.app.Modeller(topology, positions)"
                             ".addHydrogens(forcefield.openmm); otherwise load a force field that covers it")

    def write_xml(self, parameters, path) -> None:
        """Write the force field with `parameters` in place of its numbers as one XML file
        (includes resolved) that OpenMM's ForceField loads; written atomically."""
        trees = [(p, copy.deepcopy(t)) for p, t in self._trees]
        found = registered_elements(self.openmm, trees)
        tables = ParameterTables.of(self.openmm, found)  # the same entries, in the copied trees
        values = {s: {f: np.asarray(v, dtype=np.float64) for f, v in fields.items()} for s, fields in parameters.items()}
        for section, fields in values.items():
            elements = tables.elements.get(section, [])
            for entry, listed in enumerate(elements):
                for item in listed:
                    _write_entry(section, fields, entry, item)
        if "NonbondedForce" in values:
            for element in tables.elements.get("NonbondedForce.section", []):
                for name in ("coulomb14scale", "lj14scale"):
                    element.attrib[name] = repr(float(values["NonbondedForce"][name]))
        write_trees(trees, path)


def _write_entry(section, fields, entry, item):
    def put(element, name, value):
        element.attrib[name] = repr(float(value))

    if section == "AtomTypes":
        put(item, "mass", fields["mass"][entry])
    elif section == "HarmonicBondForce":
        put(item, "length", fields["length"][entry])
        put(item, "k", fields["k"][entry])
    elif section == "HarmonicAngleForce":
        put(item, "angle", fields["angle"][entry])
        put(item, "k", fields["k"][entry])
    elif section == "PeriodicTorsionForce":
        element, term = item
        put(element, f"k{term + 1}", fields["k"][entry])
        put(element, f"phase{term + 1}", fields["phase"][entry])
    elif section == "RBTorsionForce":
        for i in range(6):
            put(item, f"c{i}", fields["c"][entry][i])
    elif section == "CMAPTorsionForce":
        from ..forces import CMAPTorsions

        item.text = "\n" + " ".join(repr(v) for v in CMAPTorsions.map_to_openmm(fields["map"][entry])) + "\n"
    elif section == "NonbondedForce":
        put(item, "sigma", fields["sigma"][entry])
        put(item, "epsilon", fields["epsilon"][entry])
        if "charge" in item.attrib:
            put(item, "charge", fields["charge"][entry])
    elif section == "Residues":
        put(item, "charge", fields["charge"][entry])


def _with_binding(system, binding):
    import equinox as eqx

    return eqx.tree_at(lambda s: s.force_field, system, binding, is_leaf=lambda x: x is None)


def _check_against(system, reference) -> None:
    """The bound System must hold OpenMM's own numbers: compare per-atom values and every term
    with the openmm.System createSystem made (terms with k = 0, which OpenMM drops, aside)."""
    import openmm

    n = reference.getNumParticles()
    masses = np.array([reference.getParticleMass(i).value_in_unit(openmm.unit.dalton) for i in range(n)])
    _close("masses", np.asarray(system.atoms.mass), masses)
    terms: dict = {}  # term type -> its terms, in the System's order (CHARMM has two HarmonicBondForces)
    for t in system.bonded_inters:
        terms.setdefault(type(t), []).append(t)
    for force in reference.getForces():
        kind = type(force).__name__
        if kind in TERM_ROWS:
            term_type, *_, fields = TERM_ROWS[kind]
            indices, values = term_rows(force)
            of_type = terms.get(term_type, [])
            term = of_type.pop(0) if of_type else None
            if term is None:
                if len(indices):
                    raise RuntimeError(f"ForceField: diffmd made no {term_type.__name__} for OpenMM's {kind}")
                continue
            ours = np.column_stack([term.indices.array, *[np.asarray(getattr(term, f)).reshape(term.n_terms, -1)
                                                         for f in fields]])
            if kind != "RBTorsionForce":  # OpenMM drops terms with k = 0; diffmd keeps them (their k has a gradient)
                ours = ours[ours[:, -1] != 0]
            _close(kind, ours, np.column_stack([indices, values]))
        elif kind == "NonbondedForce":
            table = np.array([[number(v) for v in force.getParticleParameters(i)] for i in range(n)])
            for column, name in enumerate(("charge", "sigma", "epsilon")):
                _close(f"NonbondedForce {name}", np.asarray(system.atoms[name]), table[:, column])
            term = next(t for t in system.bonded_inters if type(t).__name__ == "NonbondedExceptions")
            rows = np.array([[number(v) for v in force.getExceptionParameters(k)]
                             for k in range(force.getNumExceptions())]).reshape(-1, 5)
            ours = np.column_stack([term.indices.array, np.asarray(term.charge_prod), np.asarray(term.sigma),
                                    np.asarray(term.epsilon)])
            eps_zero = rows[:, 4] == 0  # OpenMM's σ of a zero-ε exception is arbitrary
            rows[eps_zero, 3] = ours[eps_zero, 3]
            _close("NonbondedForce exceptions", ours, rows)


def _close(what, ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=1e-6, atol=1e-9):
        raise RuntimeError(f"ForceField: the {what} diffmd gathered from the force field differ from OpenMM's "
                           "createSystem (please report this)")


def _structure(structure):
    """(Topology, positions in nm) from a path, a PDBFile/PDBxFile, or a (Topology, positions) pair."""
    from openmm import app

    if isinstance(structure, (str, os.PathLike)):
        path = os.fspath(structure)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"create_system: no structure file {path!r}")
        reader = app.PDBxFile if path.lower().endswith((".cif", ".mmcif", ".pdbx")) else app.PDBFile
        structure = reader(path)
    if isinstance(structure, tuple) and len(structure) == 2:
        topology, positions = structure
    elif hasattr(structure, "topology") and hasattr(structure, "positions"):
        topology, positions = structure.topology, structure.positions
    else:
        raise TypeError("create_system: structure must be a PDB/PDBx path, an openmm.app PDBFile or PDBxFile, or a "
                        f"(Topology, positions) pair; got {type(structure).__name__}")
    positions = in_nm(positions)
    if positions.shape != (topology.getNumAtoms(), 3):
        raise ValueError(f"create_system: {positions.shape[0]} positions for {topology.getNumAtoms()} atoms")
    if not np.all(np.isfinite(positions)):
        raise ValueError("create_system: the positions contain NaN or inf")
    return topology, positions


def _as_jax(values: dict) -> dict:
    return {s: {f: jnp.asarray(v) for f, v in fields.items()} for s, fields in values.items()}


__all__ = ["ForceField"]
