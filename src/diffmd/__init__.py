"""diffmd: differentiable molecular dynamics on JAX.

Build a `System` (atoms, coordinates, boundary, interactions, neighbor finder, loggers), run it
with `simulate(system, integrator, n_steps)`, and differentiate any scalar of the resulting
`Trajectory` with `jax.grad` / `jax.jvp` with respect to any float in the system.

Packages: `space` (boundaries, geometry), `forces` (the terms of the energy, one file each),
`kernels` (pure-JAX and generated compiled pair kernels), `neighbors` (lists), `dynamics`
(integrators, couplings, constraints), `run` (simulate, gradient modes, checks).
"""

from . import io  # reporters and atomic files: md.io.StateDataReporter, …
from . import interop  # ASE atoms in and out, an ASE calculator: md.interop.from_ase, … (ASE loaded on first use)
from .atoms import Atoms
from .dynamics import (AndersenThermostat, BerendsenThermostat, Brownian, BussiThermostat, Constraints, Coupling, DistanceConstraints, FixedAtoms, ForceEval,
                       FrictionThermostat, Integrator, LangevinMiddle, LeapfrogVerlet, MDState, NoseHooverChain, NoseHooverState, MonteCarloBarostat, MonteCarloState, NoConstraints, StepContext,
                       VelocityVerlet)
from .energy import energy_and_forces, energy_terms, forces, kinetic_energy, potential_energy, temperature
from .forcefield import ForceField, from_openmm
from .forces import *  # noqa: F401,F403
from .forces import __all__ as _force_names
from .initialize import random_coords, random_velocities
from .loggers import (AMU_PER_NM3_IN_G_PER_CM3, ConservedEnergyLogger, CoordinatesLogger, DensityLogger, ForcesLogger, KineticEnergyLogger, Logger, ObservableLogger,
                      PotentialEnergyLogger, TemperatureLogger, TotalEnergyLogger, VelocitiesLogger, VolumeLogger)
from .neighbors import Capacity, CellListNeighborFinder, DistanceNeighborFinder, NeighborList, NoNeighborFinder
from .observables import distance_matrix, mean_min_separation, min_separations
from .parallel import map_replicas, replica_mesh, replica_sharding  # docs/parallel.md
from .run import Checkpointed, SimulationError, Trajectory, Truncate, minimize, simulate
from .space import CubicBoundary, NoBoundary, RectangularBoundary, vector
from .system import System
from .units import OPENMM_UNITS, REDUCED_UNITS, UnitSystem

__version__ = "0.1.0"

__all__ = [
    "Atoms", "CubicBoundary", "NoBoundary", "RectangularBoundary", "vector",
    "AndersenThermostat", "BerendsenThermostat", "Brownian", "BussiThermostat", "Coupling", "FrictionThermostat",
    "LeapfrogVerlet", "NoseHooverChain", "NoseHooverState", "MonteCarloBarostat", "MonteCarloState",
    "Constraints", "DistanceConstraints", "FixedAtoms", "NoConstraints", "ForceEval", "Integrator", "LangevinMiddle", "StepContext",
    "energy_and_forces", "energy_terms", "ForceField", "from_openmm", "forces", "kinetic_energy", "potential_energy", "temperature",
    "random_coords", "random_velocities", "MDState", "VelocityVerlet",
    "CoordinatesLogger", "ForcesLogger", "KineticEnergyLogger", "Logger", "ObservableLogger",
    "PotentialEnergyLogger", "TemperatureLogger", "TotalEnergyLogger", "VelocitiesLogger", "VolumeLogger",
    "DensityLogger", "ConservedEnergyLogger", "AMU_PER_NM3_IN_G_PER_CM3",
    "Capacity", "CellListNeighborFinder", "DistanceNeighborFinder", "NeighborList", "NoNeighborFinder",
    "distance_matrix", "mean_min_separation", "min_separations",
    "map_replicas", "replica_mesh", "replica_sharding",
    "Checkpointed", "SimulationError", "Trajectory", "Truncate", "minimize", "simulate", "System",
    "OPENMM_UNITS", "REDUCED_UNITS", "UnitSystem",
    *_force_names,
]
