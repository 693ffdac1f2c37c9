"""ASE interop: `ase.Atoms` in and out, and an ASE calculator backed by a diffmd `System`.

ASE and diffmd use different units; every conversion is explicit here:

    length    x[Å]      = 10 · x[nm]                                     (ANGSTROM_PER_NM)
    mass      m[amu]    = m[g/mol]                                       (the same number)
    energy    E[eV]     = E[kJ/mol] / 96.48533212                        (KJ_PER_MOL_PER_EV)
    force     F[eV/Å]   = F[kJ/mol/nm] / (96.48533212 · 10)
    velocity  v[Å/t]    = v[nm/ps] · 10 / (1000 · ase.units.fs)          (t = Å·√(amu/eV), ASE's time unit)

Only Systems in OpenMM units (nm, ps, amu, kJ/mol) convert: reduced units have no eV. diffmd's
periodic boxes are orthorhombic, periodic along all three axes; other ASE cells are refused.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._optional import require

ase = require("ase", "diffmd.interop.ase")  # diffmd does not need ASE; only this module does
import ase.data  # noqa: E402
import ase.units  # noqa: E402
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402

from ..atoms import Atoms
from ..energy import energy_and_forces
from ..space import NoBoundary, RectangularBoundary
from ..system import System
from ..units import OPENMM_UNITS

ANGSTROM_PER_NM = 10.0
KJ_PER_MOL_PER_EV = 96.48533212  # 1 eV · N_A / 1000 (CODATA 2018, exact)
ASE_VELOCITY_PER_NM_PER_PS = ANGSTROM_PER_NM / (1000.0 * ase.units.fs)  # 1 nm/ps = 10 Å / 1000 fs, in ASE units


@dataclasses.dataclass(frozen=True)
class AseStructure:
    """An `ase.Atoms` in diffmd's (OpenMM) units, ready to become a `System`.

    Attributes:
        coords: (N, 3) positions, nm.
        velocities: (N, 3) velocities, nm/ps (zeros where ASE has none).
        masses: (N,) masses, amu (g/mol).
        boundary: `RectangularBoundary` (sides in nm) for a periodic orthorhombic cell,
            `NoBoundary()` for a non-periodic one.
        symbols: the N chemical symbols.
    """

    coords: jnp.ndarray
    velocities: jnp.ndarray
    masses: jnp.ndarray
    boundary: NoBoundary | RectangularBoundary
    symbols: tuple[str, ...]

    def system(self, atoms: Atoms | None = None, **system_args) -> System:
        """A `System` of this structure: `atoms` default `Atoms(self.masses)` (give your own, e.g.
        `Atoms(s.masses, sigma=..., epsilon=...)`, for the parameters its interactions need);
        `system_args` (interactions, neighbor finder, ...) go to `System`."""
        return System(atoms=Atoms(self.masses) if atoms is None else atoms, coords=self.coords,
                      velocities=self.velocities, boundary=self.boundary, **system_args)


def from_ase(atoms: ase.Atoms, dtype=None) -> AseStructure:
    """An `ase.Atoms` as an `AseStructure` in nm, nm/ps and amu (`dtype`: default JAX's float).

    Positions are kept as they are (not wrapped into the cell). Raises ValueError for a cell
    diffmd cannot represent: triclinic, or periodic along some axes only."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return AseStructure(
        coords=jnp.asarray(atoms.get_positions() / ANGSTROM_PER_NM, dtype),
        velocities=jnp.asarray(atoms.get_velocities() / ASE_VELOCITY_PER_NM_PER_PS, dtype),
        masses=jnp.asarray(atoms.get_masses(), dtype),
        boundary=_boundary(atoms, dtype),
        symbols=tuple(atoms.get_chemical_symbols()),
    )


def to_ase(system: System, state=None, *, symbols=None) -> ase.Atoms:
    """A diffmd `System` (or its `state`, an `MDState` such as `simulate(...).state`, with its
    own coordinates, velocities and box) as an `ase.Atoms`: positions in Å, velocities in ASE
    units, masses in amu, the box as the cell with pbc, or no cell and no pbc without one.

    `symbols`: the N chemical symbols (e.g. `[a.element.symbol for a in topology.atoms()]` for an
    OpenMM Topology); by default guessed from the masses (the element of nearest standard mass,
    so give them for repartitioned hydrogen masses)."""
    _check_openmm_units(system, "to_ase")
    if system.n_dims != 3:
        raise ValueError(f"to_ase: ASE atoms are 3-D, this System is {system.n_dims}-D")
    coords, velocities = (system.coords, system.velocities) if state is None else (state.coords, state.velocities)
    boundary = system.boundary if state is None else state.box(system)
    masses = np.asarray(system.atoms.mass, np.float64)
    periodic = isinstance(boundary, RectangularBoundary)
    result = ase.Atoms(
        symbols=_symbols_from_masses(masses) if symbols is None else list(symbols),
        positions=np.asarray(coords, np.float64) * ANGSTROM_PER_NM,
        cell=np.diag(np.asarray(boundary.sides, np.float64) * ANGSTROM_PER_NM) if periodic else None,
        pbc=periodic,
        masses=masses,
    )
    # after the masses: ASE stores momenta
    result.set_velocities(np.asarray(velocities, np.float64) * ASE_VELOCITY_PER_NM_PER_PS)
    return result


class DiffmdCalculator(Calculator):
    """An ASE calculator: the potential energy (eV) and forces (eV/Å) of a diffmd `System` at
    the positions (and cell) of the ASE atoms it is attached to.

        atoms = to_ase(system)
        atoms.calc = DiffmdCalculator(system)
        atoms.get_potential_energy()      # eV = potential_energy(system) [kJ/mol] / 96.48533212

    Only positions and the cell are read from the atoms; masses, charges and every parameter
    are the System's. Each call rebuilds the neighbor list for the new positions inside one
    compiled function (compiled once per System structure; recompiled only when the list
    needs more room). A periodic System follows a changed orthorhombic cell (its PME grid
    stays the System's, as under a barostat); a cell shrunk below twice the largest cutoff is
    refused. The System's constraints are not applied: use ASE's constraints for that.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, system: System, **kwargs):
        _check_openmm_units(system, "DiffmdCalculator")
        if system.n_dims != 3:
            raise ValueError(f"DiffmdCalculator: ASE atoms are 3-D, this System is {system.n_dims}-D")
        super().__init__(**kwargs)
        self.system = system
        self._in_cell = None  # the System in the atoms' cell, made again when ASE reports a new cell
        self._capacity = None  # the neighbor list's shapes: chosen at the first call, again on overflow

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != self.system.n_atoms:
            raise ValueError(f"DiffmdCalculator: the atoms are {len(self.atoms)}, the System has {self.system.n_atoms}")
        if self._in_cell is None or {"cell", "pbc"} & set(system_changes):
            self._in_cell = self._system_in_cell()
        coords = jnp.asarray(self.atoms.get_positions() / ANGSTROM_PER_NM, self.system.dtype)
        energy, forces = self._evaluate(self._in_cell, coords)
        self.results["energy"] = self.results["free_energy"] = float(energy) / KJ_PER_MOL_PER_EV
        self.results["forces"] = np.asarray(forces, np.float64) / (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)

    def _system_in_cell(self) -> System:
        """The System with the atoms' cell as its box (a list that no longer fits the new box
        overflows and is resized)."""
        system, boundary = self.system, _boundary(self.atoms, self.system.dtype)
        if boundary.periodic and not system.boundary.periodic:
            raise ValueError("DiffmdCalculator: the atoms are periodic but the System has no box")
        if system.boundary.periodic and not boundary.periodic:
            raise ValueError("DiffmdCalculator: the System is periodic but the atoms are not (pbc=False)")
        if not boundary.periodic:
            return system
        if 2 * system.largest_cutoff() > boundary.min_side():
            raise ValueError(f"DiffmdCalculator: the cell {np.asarray(boundary.sides) * ANGSTROM_PER_NM} Å is "
                             f"smaller than twice the System's largest cutoff ({system.largest_cutoff()} nm)")
        return eqx.tree_at(lambda s: s.boundary, system, boundary)

    def _evaluate(self, system, coords):
        """(kJ/mol, kJ/mol/nm) with a neighbor list built at these coordinates; a list that
        overflows its capacity is built again with room sized for them."""
        if not system.uses_neighbor_list():
            return _energy_forces(system, coords, None)[:2]
        if self._capacity is None:
            self._capacity = _capacity_for(system, coords)
        energy, forces, overflowed = _energy_forces(system, coords, self._capacity)
        if bool(overflowed):
            self._capacity = _capacity_for(system, coords)
            energy, forces, _ = _energy_forces(system, coords, self._capacity)
        return energy, forces


def _capacity_for(system, coords):
    """The list's shapes for these concrete coordinates, with the finder's margin."""
    return system.neighbor_finder.initial_capacity(coords, system.boundary, system.excluded_pairs().array)


@eqx.filter_jit
def _energy_forces(system, coords, capacity):
    """Energy, forces and whether the list overflowed, the list built here (capacity static).
    Values only, never differentiated: "reverse" picks the compiled pair kernels."""
    if capacity is None:
        return (*energy_and_forces(system, coords, derivatives="reverse"), False)
    neighbors = system.neighbor_finder.build(coords, system.boundary, system.excluded_pairs().array, capacity)
    energy, forces = energy_and_forces(system, coords, neighbors, derivatives="reverse")
    return energy, forces, neighbors.overflowed


def _boundary(atoms: ase.Atoms, dtype) -> NoBoundary | RectangularBoundary:
    """diffmd's boundary for an ASE cell (nm): periodic and orthorhombic, or not periodic."""
    pbc = np.asarray(atoms.pbc)
    if not pbc.any():
        return NoBoundary(n_dims=3)
    if not pbc.all():
        raise ValueError(f"diffmd boxes are periodic along all three axes or none; these atoms have pbc={pbc.tolist()}")
    if not atoms.cell.orthorhombic:
        raise ValueError("diffmd has no triclinic boxes: the cell must be orthorhombic (a diagonal cell matrix), "
                         f"got cell lengths and angles {np.round(atoms.cell.cellpar(), 6).tolist()}")
    return RectangularBoundary(jnp.asarray(np.diag(np.asarray(atoms.cell)) / ANGSTROM_PER_NM, dtype))


def _symbols_from_masses(masses: np.ndarray) -> list[str]:
    """The element of nearest standard mass (ASE's table) for each mass, amu."""
    table = np.asarray(ase.data.atomic_masses[1:])  # [0] is ASE's placeholder "X"
    return [ase.data.chemical_symbols[1 + int(np.argmin(np.abs(table - m)))] for m in masses]


def _check_openmm_units(system: System, name: str) -> None:
    if system.units != OPENMM_UNITS:
        raise ValueError(f"{name}: the System is in {system.units.name} units ({system.units.length}, "
                         f"{system.units.energy}), which have no conversion to ASE's Å and eV; build it in "
                         "OpenMM units (nm, ps, amu, kJ/mol)")


__all__ = ["ANGSTROM_PER_NM", "ASE_VELOCITY_PER_NM_PER_PS", "KJ_PER_MOL_PER_EV", "AseStructure",
           "DiffmdCalculator", "from_ase", "to_ase"]
