"""Running a System: `simulate` (the compiled scan and its gradient modes), the step driver
(`driver`), scans with the memory strategy of a mode (`scan`, `state_scan`), gradient-mode
values (`modes`) and the checks that name what went wrong (`checks`)."""

from .checks import SimulationError
from .minimize import minimize
from .modes import Checkpointed, Truncate
from .simulate import Trajectory, simulate

__all__ = ["minimize", "SimulationError", "Checkpointed", "Truncate", "Trajectory", "simulate"]
