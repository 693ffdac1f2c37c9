"""The XML files of a force field as OpenMM reads them, and the element behind each of its numbers.

`ForceField` keeps the parsed trees so that `write_xml` can put trained numbers back into the
same elements. The walk below visits elements in the order OpenMM's generators register them,
with the same rule for skipping entries whose atom types are unknown, so the k-th entry of a
generator is the k-th element listed here (checked value by value when the force field loads).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as etree


def load_trees(files) -> list[tuple[str, etree.ElementTree]]:
    """[(path, tree)] of the files and everything they include, in OpenMM's loading order."""
    from openmm.app.forcefield import _getDataDirectories

    queue, trees = list(files), []
    while len(trees) < len(queue):
        file = queue[len(trees)]
        path = file
        if isinstance(file, (str, os.PathLike)) and not os.path.isfile(file):
            for directory in _getDataDirectories():
                candidate = os.path.join(directory, file)
                if os.path.isfile(candidate):
                    path = candidate
                    break
        if not os.path.isfile(path):
            raise ValueError(f"ForceField: could not find the force-field file {file!r} (looked in the working "
                             "directory and OpenMM's data directories)")
        tree = etree.parse(path)
        trees.append((str(path), tree))
        for included in tree.getroot().findall("Include"):
            name = included.attrib["file"]
            joined = os.path.join(os.path.dirname(str(path)), name)
            name = joined if os.path.isfile(joined) else name
            if name not in queue:
                queue.append(name)
    return trees


# Per generator section: (element tag, number of atoms it types); torsions also by parseTorsion.
_BONDED_TAGS = {
    "HarmonicBondForce": [("Bond", 2)],
    "HarmonicAngleForce": [("Angle", 3)],
    "PeriodicTorsionForce": [("Proper", 4), ("Improper", 4)],
    "RBTorsionForce": [("Proper", 4), ("Improper", 4)],
}


def registered_elements(openmm_ff, trees) -> dict:
    """{(section, tag): [element, ...]} in the order OpenMM's generators registered them, plus
    ("CMAPTorsionForce", "Map"), ("NonbondedForce", "Atom"), ("NonbondedForce", "section"),
    ("Residues", "Residue") and ("Patches", "Patch") lists, and ("AtomTypes", "Type")."""
    found: dict = {}
    for _, tree in trees:
        root = tree.getroot()
        types = root.find("AtomTypes")
        if types is not None:
            found.setdefault(("AtomTypes", "Type"), []).extend(types.findall("Type"))
        residues = root.find("Residues")
        if residues is not None:
            found.setdefault(("Residues", "Residue"), []).extend(residues.findall("Residue"))
        patches = root.find("Patches")
        if patches is not None:
            found.setdefault(("Patches", "Patch"), []).extend(patches.findall("Patch"))
    for _, tree in trees:
        for child in tree.getroot():
            if child.tag in _BONDED_TAGS:
                for tag, n in _BONDED_TAGS[child.tag]:
                    for element in child.findall(tag):
                        if None not in openmm_ff._findAtomTypes(element.attrib, n):
                            found.setdefault((child.tag, tag), []).append(element)
            elif child.tag == "CMAPTorsionForce":
                found.setdefault((child.tag, "Map"), []).extend(child.findall("Map"))
            elif child.tag == "NonbondedForce":
                found.setdefault((child.tag, "section"), []).append(child)
                for element in child.findall("Atom"):
                    if None not in openmm_ff._findAtomTypes(element.attrib, 1):
                        found.setdefault((child.tag, "Atom"), []).append(element)
    return found


def write_trees(trees, path) -> None:
    """One XML file holding every tree's definitions (includes resolved), written atomically."""
    from ..io.files import atomic_write_bytes

    merged = etree.Element("ForceField")
    sections: dict[str, etree.Element] = {}
    for _, tree in trees:
        for child in tree.getroot():
            if child.tag == "Include":
                continue
            if child.tag in ("AtomTypes", "Residues", "Patches"):
                if child.tag not in sections:
                    sections[child.tag] = etree.SubElement(merged, child.tag)
                sections[child.tag].extend(list(child))
            else:
                merged.append(child)
    # OpenMM reads atom types, then residues and patches, then forces in document order.
    order = {"Info": 0, "AtomTypes": 1, "Residues": 2, "Patches": 3}
    merged[:] = sorted(merged, key=lambda e: order.get(e.tag, 4))
    etree.indent(merged)
    atomic_write_bytes(path, (etree.tostring(merged, encoding="unicode") + "\n").encode())


__all__ = ["load_trees", "registered_elements", "write_trees"]
