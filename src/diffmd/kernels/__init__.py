"""Pair kernels: the pure-JAX reference (`rows`), C++ generated from a pair function's traced
energy (`codegen`), its build (`build`) and JAX wrappers (`compiled`), and the fusion of every
pairwise term that shares neighbor rows into one pass (`pairs`)."""

from .build import available
from .pairs import DERIVATIVES, fuse, pair_energy_forces

__all__ = ["available", "DERIVATIVES", "fuse", "pair_energy_forces"]
