"""Dynamics: the state (`state`), integrators as pure updates of (x, v) (`integrators`),
couplings such as thermostats (`couplings`) and the constraint slot (`constraints`)."""

from .barostats import MonteCarloBarostat, MonteCarloState
from .constraints import Constraints, FixedAtoms, NoConstraints
from .distance_constraints import DistanceConstraints
from .couplings import AndersenThermostat, BerendsenThermostat, BussiThermostat, Coupling, FrictionThermostat
from .integrators import (Brownian, Integrator, LangevinMiddle, LeapfrogVerlet, NoseHooverChain, NoseHooverState,
                          StepContext, VelocityVerlet,
                          as_couplings)
from .state import ForceEval, MDState

__all__ = ["MonteCarloBarostat", "MonteCarloState", "Constraints", "DistanceConstraints", "FixedAtoms", "NoConstraints", "AndersenThermostat", "BerendsenThermostat", "BussiThermostat", "Brownian", "LeapfrogVerlet", "NoseHooverChain", "NoseHooverState", "Coupling",
           "FrictionThermostat", "Integrator", "LangevinMiddle", "StepContext", "VelocityVerlet", "as_couplings", "ForceEval", "MDState"]
