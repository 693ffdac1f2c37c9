"""JAX wrappers of the generated pair kernels (XLA FFI calls into `_native/pair_ffi.cc`).

Inputs: coordinates x (N, D), per-atom parameters (P, N), shared parameters (G,), neighbor rows
idx (N, K) int32 padded with N, box sides (D,) (ignored in an open box). Outputs: energy and
forces (N, D).

Two differentiation rules, one per direction (a function has either a custom JVP or a custom
VJP in JAX, and `vmap` must work through both):

* `pair_rows` — for reverse mode: a custom VJP; `jax.grad` runs the forward kernel, then the
  VJP kernel (a gather-only row sum, see `diffmd.kernels.rows`). No `jax.jvp` through it.
* `pair_rows_fused` — for forward mode: a custom JVP that computes energy, forces and both
  tangents in one pass. Not transposable, so no reverse mode through it.
`simulate` picks the one its `grad_mode` needs and turns a mismatch into an error naming the
mode to use.

Shared parameters and the box are seen from both rows of every pair, so their reverse-mode
cotangents are halved here; each row differentiates its own atom's parameters only (the pair
function is symmetric), so those are not.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Kernel(NamedTuple):
    """A registered generated kernel: its name and whether the box is periodic (static)."""

    name: str
    periodic: bool


def _call(kind: str, kernel: Kernel, outputs, *args):
    suffix = "f32" if args[0].dtype == jnp.float32 else "f64"
    return jax.ffi.ffi_call(f"diffmd_pair_{kind}_{suffix}", outputs, vmap_method="sequential")(
        *args, kernel=kernel.name, periodic=np.int32(kernel.periodic))


def forward(kernel: Kernel, x, params, globals_, idx, sides):
    """(energy, forces) from the compiled forward kernel."""
    outputs = (jax.ShapeDtypeStruct((), x.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype))
    return _call("forward", kernel, outputs, x, params, globals_, idx, sides)


def _jvp(kernel: Kernel, primals, tangents):
    """(E, F, Ė, Ḟ) in one pass of the compiled JVP kernel."""
    tangents = [jnp.asarray(t, primals[0].dtype) for t in tangents]
    return _jvp_call(kernel)(*primals, *tangents)


@functools.cache
def _jvp_call(kernel: Kernel):
    """The JVP kernel's call, batched one element at a time. Under `jax.jacfwd` (a vmap over
    tangents only) its primal outputs must stay unbatched, which a plain sequential FFI call
    cannot say: they are taken from the first element."""

    def call(x, *args):
        scalar, vector = jax.ShapeDtypeStruct((), x.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype)
        return _call("jvp", kernel, (scalar, vector, scalar, vector), x, *args)

    batched_call = jax.custom_batching.custom_vmap(call)

    @batched_call.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(args, in_batched)]
        energy, forces, energy_dot, forces_dot = jax.lax.map(lambda a: batched_call(*a), args)
        primals_batched = any(in_batched[:5])
        if not primals_batched:
            energy, forces = energy[0], forces[0]
        return (energy, forces, energy_dot, forces_dot), (primals_batched, primals_batched, True, True)

    return batched_call


def _vjp(kernel: Kernel, primals, cotangents):
    """(x̄, θ̄, ḡ, L̄) from (Ē, F̄) with the compiled VJP kernel."""
    x, params, globals_, idx, sides = primals
    e_bar, f_bar = cotangents
    outputs = tuple(jax.ShapeDtypeStruct(a.shape, x.dtype) for a in (x, params, globals_, sides))
    x_bar, params_bar, globals_bar, sides_bar = _call(
        "vjp", kernel, outputs, x, params, globals_, idx, sides, jnp.asarray(e_bar, x.dtype), f_bar.astype(x.dtype))
    return x_bar, params_bar, 0.5 * globals_bar, 0.5 * sides_bar


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def pair_rows(kernel: Kernel, x, params, globals_, idx, sides):
    """(energy, forces) with the compiled reverse pass (not forward-differentiable)."""
    return forward(kernel, x, params, globals_, idx, sides)


def _pair_rows_fwd(kernel, x, params, globals_, idx, sides):
    return forward(kernel, x, params, globals_, idx, sides), (x, params, globals_, idx, sides)


def _pair_rows_bwd(kernel, residuals, cotangents):
    x_bar, params_bar, globals_bar, sides_bar = _vjp(kernel, residuals, cotangents)
    return x_bar, params_bar, globals_bar, None, sides_bar


pair_rows.defvjp(_pair_rows_fwd, _pair_rows_bwd)


def _instantiate(t, primal):
    return jnp.zeros(primal.shape, primal.dtype) if isinstance(t, jax.custom_derivatives.SymbolicZero) else t


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def pair_rows_fused(kernel: Kernel, x, params, globals_, idx, sides):
    """(energy, forces) whose forward-mode derivative is computed with them in one pass."""
    return forward(kernel, x, params, globals_, idx, sides)


def _pair_rows_fused_jvp(kernel, primals, tangents):
    x, params, globals_, idx, sides = primals
    tangents = [_instantiate(t, p) for t, p in zip((tangents[0], tangents[1], tangents[2], tangents[4]),
                                                   (x, params, globals_, sides))]
    energy, forces, energy_dot, forces_dot = _jvp(kernel, primals, tangents)
    return (energy, forces), (energy_dot, forces_dot)


pair_rows_fused.defjvp(_pair_rows_fused_jvp, symbolic_zeros=True)
