"""diffmd: differentiable molecular dynamics on JAX.

Build a `System` (atoms, coordinates, boundary, interactions, neighbor finder, loggers), run it
with `simulate(system, integrator, n_steps)`, and differentiate any scalar of the resulting
`Trajectory` with `jax.grad` / `jax.jvp` with respect to any float in the system.
"""

from .atoms import Atoms
from .boundaries import CubicBoundary, NoBoundary, RectangularBoundary, vector
from .couplers import AndersenThermostat, BerendsenThermostat, Coupling, FrictionThermostat
from .energy import energy_and_forces, forces, kinetic_energy, potential_energy, temperature
from .initialize import random_coords, random_velocities
from .integrators import MDState, VelocityVerlet
from .interactions import *  # noqa: F401,F403
from .interactions import __all__ as _interaction_names
from .loggers import (
    CoordinatesLogger,
    ForcesLogger,
    KineticEnergyLogger,
    Logger,
    ObservableLogger,
    PotentialEnergyLogger,
    TemperatureLogger,
    TotalEnergyLogger,
    VelocitiesLogger,
)
from .neighbors import CellListNeighborFinder, DistanceNeighborFinder, NeighborList, NoNeighborFinder
from .observables import distance_matrix, mean_min_separation, min_separations
from .parallel import map_replicas, replica_mesh, replica_sharding  # docs/parallel.md
from .simulate import SimulationError, Trajectory, simulate
from .system import System
from .units import OPENMM_UNITS, REDUCED_UNITS, UnitSystem

__version__ = "0.1.0"

__all__ = [
    "Atoms", "CubicBoundary", "NoBoundary", "RectangularBoundary", "vector",
    "AndersenThermostat", "BerendsenThermostat", "Coupling", "FrictionThermostat",
    "energy_and_forces", "forces", "kinetic_energy", "potential_energy", "temperature",
    "random_coords", "random_velocities", "MDState", "VelocityVerlet",
    "CoordinatesLogger", "ForcesLogger", "KineticEnergyLogger", "Logger", "ObservableLogger",
    "PotentialEnergyLogger", "TemperatureLogger", "TotalEnergyLogger", "VelocitiesLogger",
    "CellListNeighborFinder", "DistanceNeighborFinder", "NeighborList", "NoNeighborFinder",
    "distance_matrix", "mean_min_separation", "min_separations",
    "map_replicas", "replica_mesh", "replica_sharding",
    "SimulationError", "Trajectory", "simulate", "System",
    "OPENMM_UNITS", "REDUCED_UNITS", "UnitSystem",
    *_interaction_names,
]
