"""Dynamics: the state (`state`), integrators as pure updates of (x, v) (`integrators`),
couplings such as thermostats (`couplings`) and the constraint slot (`constraints`)."""

from .constraints import Constraints, FixedAtoms, NoConstraints
from .distance_constraints import DistanceConstraints
from .couplings import AndersenThermostat, BerendsenThermostat, BussiThermostat, Coupling, FrictionThermostat
from .integrators import (Brownian, Integrator, LangevinMiddle, LeapfrogVerlet, StepContext, VelocityVerlet,
                          as_couplings)
from .state import ForceEval, MDState

__all__ = ["Constraints", "DistanceConstraints", "FixedAtoms", "NoConstraints", "AndersenThermostat", "BerendsenThermostat", "BussiThermostat", "Brownian", "LeapfrogVerlet", "Coupling",
           "FrictionThermostat", "Integrator", "LangevinMiddle", "StepContext", "VelocityVerlet", "as_couplings", "ForceEval", "MDState"]
