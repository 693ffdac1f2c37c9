"""Other libraries' structures and drivers: `diffmd.interop.ase` (ASE atoms in and out, an ASE
calculator; `docs/ase.md`). OpenMM's are in `diffmd.forcefield` (`from_openmm`,
`ForceField.create_system`) and `diffmd.io.TrajectoryReporter` (DCD, XTC, PDB).

The names below load `diffmd.interop.ase` (and ASE) on first use, so diffmd imports without ASE.
"""

_ASE_NAMES = ("AseStructure", "DiffmdCalculator", "from_ase", "to_ase")


def __getattr__(name):
    if name in _ASE_NAMES:
        from . import ase

        return getattr(ase, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_ASE_NAMES)
