"""Unit systems.

diffmd computes in whatever consistent units the numbers are given in; a `UnitSystem` only
supplies the constants that link them (Boltzmann's constant, Coulomb's constant) and the
names used in docstrings and plots.

* `OPENMM_UNITS` (default): nm, ps, amu (g/mol), kJ/mol, K, elementary charge e.
* `REDUCED_UNITS`: dimensionless, k_B = 1 and Coulomb constant 1, as in the reference's
  Molly examples (σ, ε, m and T given as plain numbers).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class UnitSystem:
    """Constants of a unit system.

    Attributes:
        name: short label.
        boltzmann: k_B in energy per temperature (kJ/mol/K for OpenMM units).
        coulomb: 1/(4π ε0) in energy·length/charge² (kJ/mol·nm/e² for OpenMM units).
        length, time, mass, energy, temperature, charge: unit names.
        energy_density_per_bar: 1 bar in energy/length³ (0.0602214076 kJ/mol/nm³ for OpenMM
            units; 1 in reduced units, where a "pressure in bar" is read as ε/σ³).
    """

    name: str
    boltzmann: float
    coulomb: float
    length: str
    time: str
    mass: str
    energy: str
    temperature: str
    charge: str
    energy_density_per_bar: float = 1.0


OPENMM_UNITS = UnitSystem(
    name="openmm",
    boltzmann=0.008314462618,
    coulomb=138.93545764438198,  # OpenMM's ONE_4PI_EPS0 (8.x), so forces agree to 1e-8
    length="nm",
    time="ps",
    mass="amu",
    energy="kJ/mol",
    temperature="K",
    charge="e",
    energy_density_per_bar=0.0602214076,  # 1e5 Pa × 1e-27 m³/nm³ × N_A / 1000 J/kJ
)
"""OpenMM's units: nm, ps, amu, kJ/mol, K, e; k_B = 0.008314462618 kJ/(mol K)."""

REDUCED_UNITS = UnitSystem(
    name="reduced",
    boltzmann=1.0,
    coulomb=1.0,
    length="σ",
    time="τ",
    mass="m",
    energy="ε",
    temperature="ε/k_B",
    charge="q",
)
"""Reduced (Lennard-Jones) units: lengths in σ, energies in ε, k_B = 1, Coulomb constant 1."""
