"""Real molecules: OpenMM's systems and force fields as diffmd Systems.

* `from_openmm(openmm_system, positions)`: any supported openmm.System, numbers copied;
* `ForceField(*xml_files).create_system(structure, ...)`: a System whose numbers are gathered
  from the force field's parameter pytree, so gradients reach every number of the files.
"""

from .forcefield import ForceField
from .openmm_system import from_openmm

__all__ = ["ForceField", "from_openmm"]
