"""Optional dependencies: imported where a feature needs them, with one clear error if absent.

The core (simulate, differentiate, train) needs only jax, equinox, optax, numpy and matplotlib;
force-field files need openmm, trajectory files mdtraj, ASE interop ase. Each has an extra:
`pip install "diffmd[openmm]"`, `"diffmd[io]"`, `"diffmd[ase]"` (or `"diffmd[all]"`).
"""

from __future__ import annotations

import importlib

# module -> the extra that installs it
EXTRAS = {"openmm": "openmm", "mdtraj": "io", "ase": "ase"}


def require(module: str, feature: str):
    """Import `module` (e.g. "openmm.app") or raise ImportError naming the feature and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise ImportError(f"{feature} needs the optional package {top!r}: "
                          f"pip install \"diffmd[{EXTRAS.get(top, 'all')}]\" (or pip install {top})") from None
