"""All pairwise terms that share neighbor rows, fused into one pass over them.

`fuse` sums the terms' pair functions into one, `vs(r, θ_i, θ_j, g) -> (V, s)` (and `vs_r2`,
the same from r²): θ are the per-atom arrays the terms read (each array once, however many
terms read it) and g every scalar float leaf of the terms (so `jax.grad` reaches σ, ε,
charges, the Coulomb constant, Mie exponents…). `pair_energy_forces` evaluates it over the rows:

* compiled (CPU, where a C++ compiler exists): the pair function is traced, its derivatives
  with it, translated into C++ (`codegen`) and compiled once per structure; the kernels
  evaluate each pair once, in registers, vectorised (`compiled`);
* pure JAX (`rows`): the reference, the GPU path, and the fallback for a pair function the
  translation does not cover (a warning names what).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ..forces.base import Params
from ..space.boundaries import NoBoundary, RectangularBoundary
from . import build, codegen, compiled
from .rows import row_kernel

DERIVATIVES = ("any", "reverse", "forward")
"""The values of `derivatives`: which derivatives will be taken of a pair kernel's result."""


@dataclass(frozen=True)
class Fused:
    """The fused pair function of some terms, and its inputs for one system."""

    vs: Callable  # (r, θ_i, θ_j, g) -> (V, s): the pure-JAX kernel's
    vs_r2: Callable  # the same from r² (the compiled kernels': no square root where none is needed)
    params: tuple  # P per-atom arrays (N,), in the kernel's dtype
    globals: tuple  # G scalars, in the kernel's dtype
    structure: object  # hashable description of vs (None if it cannot be hashed)
    names: str  # the terms, for messages
    cutoff: float  # the largest cutoff of the terms (pairs beyond contribute nothing)


def _is_float(leaf) -> bool:
    """A float leaf: an inexact array (or tracer) or a Python float (which jax.grad also
    differentiates). (eqx.is_inexact_array_like fails on tracers with jax 0.12.)"""
    return eqx.is_inexact_array(leaf) or (isinstance(leaf, (float, complex)) and not isinstance(leaf, bool))


def fuse(terms, atoms, dtype) -> Fused:
    """One pair function for all `terms` that share rows: V(r) and s = −(dV/dr)/r summed over the
    terms, with every term's per-atom parameters gathered from `atoms` as `dtype` arrays."""
    arrays: list = []
    slots = []
    for term in terms:
        values = term.atom_values(atoms)
        positions = []
        for name, value in values.items():
            k = next((k for k, a in enumerate(arrays) if a is value), None)
            if k is None:
                arrays.append(value)
                k = len(arrays) - 1
            positions.append((name, k))
        slots.append(tuple(positions))
    slots = tuple(slots)
    dynamic, static = eqx.partition(tuple(terms), _is_float)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)

    def summed(method):
        def vs(x, p_i, p_j, g):
            live = eqx.combine(jax.tree_util.tree_unflatten(treedef, list(g)), static)
            energy, scale = 0.0, 0.0
            for term, positions in zip(live, slots):
                v, s = getattr(term, method)(x, Params({n: p_i[k] for n, k in positions}),
                                             Params({n: p_j[k] for n, k in positions}))
                energy, scale = energy + v, scale + s
            return energy, scale
        return vs

    try:
        structure = (static, treedef, slots)
        hash(structure)
    except TypeError:
        structure = None
    params = tuple(jnp.asarray(a).astype(dtype) for a in arrays)
    globals_ = tuple(jnp.asarray(leaf).astype(dtype) for leaf in leaves)
    cutoff = max((term.cutoff_distance for term in terms), default=math.inf)
    names = " + ".join(type(t).__name__ for t in terms)
    return Fused(summed("value_and_scale"), summed("value_and_scale_r2"), params, globals_, structure, names, cutoff)


@functools.lru_cache(maxsize=256)
def _generate(structure, vs_holder, n_params: int, n_globals: int, dtype, dims: int, cutoff: float):
    """(kernel name, source) of a fused structure, or the reason it cannot be compiled."""
    try:
        programs = codegen.trace_programs(vs_holder.vs, n_params, n_globals, dtype)
    except Exception as error:  # e.g. a while_loop, which JAX cannot differentiate in reverse mode
        return f"an operation JAX cannot trace into the kernel's derivative programs ({type(error).__name__}: " \
               f"{str(error).splitlines()[0][:200]})"
    try:
        return codegen.kernel_sources(programs, dtype, dims, cutoff)
    except codegen.Unsupported as error:
        return str(error)


class _Holder:
    """Carries the pair function into the cache without making it part of the key."""

    def __init__(self, vs):
        self.vs = vs

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Holder)


_WARNED: set = set()


def _kernel(fused: Fused, coords, boundary, parts=("forward", "vjp")) -> compiled.Kernel | None:
    """The compiled kernel for these terms with the given parts built, or None (pure JAX)."""
    if (jax.default_backend() != "cpu" or not isinstance(boundary, (NoBoundary, RectangularBoundary))
            or coords.dtype not in (jnp.float32, jnp.float64) or coords.shape[-1] not in (2, 3)
            or not build.available()):
        return None
    if fused.structure is None or any(jnp.ndim(g) for g in fused.globals):
        return _fallback(fused, "it has parameters that are not scalars")
    dtype = jnp.dtype(coords.dtype)
    generated = _generate(fused.structure, _Holder(fused.vs_r2), len(fused.params), len(fused.globals), dtype,
                          coords.shape[-1], fused.cutoff)
    if isinstance(generated, str):
        return _fallback(fused, generated)
    name, sources = generated
    build.ensure_pair_kernel(name, sources, parts, dtype.itemsize, coords.shape[-1], len(fused.params),
                             len(fused.globals))
    return compiled.Kernel(name, isinstance(boundary, RectangularBoundary))


def _fallback(fused: Fused, reason: str) -> None:
    if fused.names not in _WARNED:
        _WARNED.add(fused.names)
        warnings.warn(f"diffmd: {fused.names} runs on the pure-JAX pair kernel: its pair function has {reason}, "
                      "which the compiled kernels do not translate", RuntimeWarning, stacklevel=4)
    return None


def pair_energy_forces(terms, atoms, coords, boundary, idx, derivatives: str = "any"):
    """(energy, forces (N, D)) of pairwise terms over neighbor rows idx (N, K) padded with N.

    `derivatives`: "any" — the pure-JAX kernel under plain autodiff (every transformation, any
    order); "reverse" — the compiled kernels with their reverse pass (jax.grad, first order), else
    the pure-JAX kernel with its gather-only reverse pass; "forward" — the compiled kernel with
    fused forward-mode derivatives (no reverse mode), else plain autodiff.
    """
    fused = fuse(terms, atoms, coords.dtype)
    if derivatives != "any":
        parts = ("forward", "vjp") if derivatives == "reverse" else ("forward", "jvp")
        kernel = _kernel(fused, coords, boundary, parts)
        if kernel is not None:
            n = coords.shape[0]
            params = jnp.stack(fused.params) if fused.params else jnp.zeros((0, n), coords.dtype)
            globals_ = jnp.stack(fused.globals) if fused.globals else jnp.zeros((0,), coords.dtype)
            sides = (boundary.sides.astype(coords.dtype) if isinstance(boundary, RectangularBoundary)
                     else jnp.ones((coords.shape[1],), coords.dtype))
            rows = compiled.pair_rows if derivatives == "reverse" else compiled.pair_rows_fused
            return rows(kernel, coords, params, globals_, idx.astype(jnp.int32), sides)
    kernel = row_kernel(fused.vs, reverse=derivatives == "reverse")
    return kernel(coords, boundary, fused.params, fused.globals, idx)
