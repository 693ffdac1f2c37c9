"""Where the backward time goes: a bare scan of velocity-Verlet steps (LJ argon as in
gradient_memory.py, fixed neighbor list, float32), timed per step for

- the forward step, value and gradient with respect to σ, and one forward-mode tangent with
  the compiled kernels (`diffmd.kernels`: the LJ pair kernel generated and compiled, with its
  VJP and fused JVP; `md.energy_and_forces(..., derivatives="reverse" / "forward")`), when built;
- the same with the pure-JAX kernel: its custom VJP, JAX's own autodiff of it, its tangent;
- value and gradient with the pure-JAX kernel's backward pass replaced by a cheap stub, i.e.
  what the integrator and everything but the pair kernel cost backward.

    .venv/bin/python benchmarks/backward_profile.py [--atoms 1000] [--steps 50]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path
from unittest import mock

import equinox as eqx
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradient_memory as fluid  # noqa: E402

import diffmd as md  # noqa: E402
from diffmd.kernels import build, pairs, rows  # noqa: E402

simulate_module = importlib.import_module("diffmd.run.simulate")


def make_run(n_atoms: int, n_steps: int):
    """run(σ, neighbors, derivatives) → mean potential energy per atom over a bare Verlet scan,
    the forces from `md.energy_and_forces(system, x, neighbors, derivatives=derivatives)`."""
    system = fluid.make_system(n_atoms, fluid.SIGMA)
    capacity = simulate_module._choose_capacity(system)
    neighbors = system.neighbor_finder.build(system.coords, system.boundary, system.excluded_pairs().array, capacity)

    def run(sigma, neighbors, derivatives):
        atoms = md.Atoms.uniform(n_atoms, mass=fluid.MASS, sigma=sigma, epsilon=fluid.EPSILON, dtype=jnp.float32)
        with_sigma = eqx.tree_at(lambda s: s.atoms, system, atoms)
        half_dt_over_m = 0.5 * fluid.DT / fluid.MASS

        def kernel(x):
            return md.energy_and_forces(with_sigma, x, neighbors, derivatives=derivatives)

        def step(carry, _):
            x, v, f = carry
            v_half = v + half_dt_over_m * f
            x = x + fluid.DT * v_half
            e, f = kernel(x)
            return (x, v_half + half_dt_over_m * f, f), e

        _, f0 = kernel(system.coords)
        _, energies = jax.lax.scan(step, (system.coords, system.velocities, f0), None, length=n_steps)
        return jnp.mean(energies) / n_atoms

    return run, neighbors


def pure_jax():
    """The pure-JAX kernel even where the compiled ones are built (this process only)."""
    return mock.patch.object(pairs, "_kernel", lambda *args: None)


def stub_row_kernel(vs, reverse: bool):
    """The pure-JAX row kernel with a cheap reverse pass: cotangents that still depend on the
    incoming ones (so nothing is dead code)."""
    plain = rows.row_kernel(vs, reverse=False)
    if not reverse:
        return plain

    @jax.custom_vjp
    def kernel(x, boundary, params, globals_, idx):
        return plain(x, boundary, params, globals_, idx)

    def fwd(x, boundary, params, globals_, idx):
        return plain(x, boundary, params, globals_, idx), (x, boundary, params, globals_)

    def bwd(residuals, cotangents):
        x, boundary, params, globals_ = residuals
        e_bar, f_bar = cotangents
        zeros = lambda tree: jax.tree_util.tree_map(  # noqa: E731
            lambda a: jnp.zeros_like(a) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact) else None, tree)
        depends = (jnp.sum(f_bar) + e_bar) * 1e-12
        like = lambda tree: jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) + depends.astype(a.dtype), tree)  # noqa: E731
        return 1e-9 * f_bar.astype(x.dtype), zeros(boundary), like(params), like(globals_), None

    kernel.defvjp(fwd, bwd)
    return kernel


def per_step_ms(fn, args, n_steps: int, repeats: int = 5) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return min(times) / n_steps * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--atoms", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    run, neighbors = make_run(args.atoms, args.steps)
    sigma = jnp.float32(fluid.SIGMA)
    cases = []  # (name, function, context it is compiled in)
    if build.available():
        cases += [
            ("compiled: forward step", lambda s, nl: run(s, nl, "reverse"), contextlib.nullcontext),
            ("compiled: value and gradient", jax.value_and_grad(lambda s, nl: run(s, nl, "reverse")),
             contextlib.nullcontext),
            ("compiled: forward mode, one tangent",
             lambda s, nl: jax.jvp(lambda q: run(q, nl, "forward"), (s,), (jnp.ones_like(s),)), contextlib.nullcontext),
        ]
    cases += [
        ("pure JAX: forward step", lambda s, nl: run(s, nl, "reverse"), pure_jax),
        ("pure JAX: value and gradient, custom VJP", jax.value_and_grad(lambda s, nl: run(s, nl, "reverse")), pure_jax),
        ("pure JAX: value and gradient, JAX autodiff", jax.value_and_grad(lambda s, nl: run(s, nl, "any")), pure_jax),
        ("pure JAX: forward mode, one tangent",
         lambda s, nl: jax.jvp(lambda q: run(q, nl, "any"), (s,), (jnp.ones_like(s),)), pure_jax),
    ]
    rows_ms = []
    for name, fn, context in cases:
        with context():
            rows_ms.append((name, per_step_ms(fn, (sigma, neighbors), args.steps)))
    jax.clear_caches()
    with pure_jax(), mock.patch.object(pairs, "row_kernel", stub_row_kernel):  # this process only
        rows_ms.append(("pure JAX: value and gradient, stub pair backward",
                        per_step_ms(jax.value_and_grad(lambda s, nl: run(s, nl, "reverse")), (sigma, neighbors),
                                    args.steps)))
    forward_ms = {name.split(":")[0]: ms for name, ms in rows_ms if name.endswith("forward step")}
    print(f"| N = {args.atoms}, {args.steps} steps | ms per step | × its forward step |\n|---|---|---|")
    for name, ms in rows_ms:
        print(f"| {name} | {ms:.3f} | {ms / forward_ms[name.split(':')[0]]:.2f} |")


if __name__ == "__main__":
    main()
