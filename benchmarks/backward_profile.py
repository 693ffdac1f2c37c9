"""Where the backward time goes: a bare scan of velocity-Verlet steps (LJ argon as in
gradient_memory.py, fixed neighbor list, float32), timed per step for

- the forward step, value and gradient with respect to σ, and one forward-mode tangent with
  the compiled kernels (`diffmd.native`: compiled forward, VJP and fused JVP), when built;
- the same with the pure-JAX kernel: its custom VJP, JAX's own autodiff of it, its tangent;
- value and gradient with the pure-JAX kernel's backward pass replaced by a cheap stub, i.e.
  what the integrator and everything but the pair kernel cost backward.

    .venv/bin/python benchmarks/backward_profile.py [--atoms 1000] [--steps 50]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradient_memory as fluid  # noqa: E402

import diffmd as md  # noqa: E402
from diffmd import energy, native  # noqa: E402

simulate_module = importlib.import_module("diffmd.simulate")


def make_run(n_atoms: int, n_steps: int):
    """run(σ, idx, kernel) → mean potential energy per atom over a bare Verlet scan."""
    system = fluid.make_system(n_atoms, fluid.SIGMA)
    capacity = simulate_module._choose_capacity(system)
    idx = system.neighbor_finder.build(system.coords, system.boundary, system.excluded_pairs().array, capacity).idx
    inter, boundary = system.pairwise_inters[0], system.boundary

    def run(sigma, idx, kernel):
        atoms = md.Atoms.uniform(n_atoms, mass=fluid.MASS, sigma=sigma, epsilon=fluid.EPSILON, dtype=jnp.float32)
        half_dt_over_m = 0.5 * fluid.DT / fluid.MASS

        def step(carry, _):
            x, v, f = carry
            v_half = v + half_dt_over_m * f
            x = x + fluid.DT * v_half
            e, f = kernel(x, boundary, atoms, inter, idx)
            return (x, v_half + half_dt_over_m * f, f), e

        _, f0 = kernel(system.coords, boundary, atoms, inter, idx)
        _, energies = jax.lax.scan(step, (system.coords, system.velocities, f0), None, length=n_steps)
        return jnp.mean(energies) / n_atoms

    return run, idx


def stub_backward(residuals, cotangents):
    """Cheap cotangents that still depend on the incoming ones (so nothing is dead code)."""
    x, boundary, atoms, inter, _ = residuals
    e_bar, f_bar = cotangents
    zeros = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda a: jnp.zeros_like(a) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact) else None, tree)
    depends = (jnp.sum(f_bar) + e_bar) * 1e-12
    atoms_bar = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) + depends.astype(a.dtype), atoms)
    return 1e-9 * f_bar.astype(x.dtype), zeros(boundary), atoms_bar, zeros(inter), None


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
    run, idx = make_run(args.atoms, args.steps)
    sigma = jnp.float32(fluid.SIGMA)
    custom, plain = energy._pair_rows, energy._pair_rows_plain
    cases = []
    if native.available():
        def compiled(derivatives):
            def kernel(x, boundary, atoms, inter, idx):
                return native.lj_rows(derivatives, native.lj_config(inter, boundary, x), x, atoms, boundary, idx)
            return kernel

        reverse, forward = compiled("reverse"), compiled("forward")
        cases += [
            ("compiled: forward step", lambda s, i: run(s, i, reverse)),
            ("compiled: value and gradient", jax.value_and_grad(lambda s, i: run(s, i, reverse))),
            ("compiled: forward mode, one tangent",
             lambda s, i: jax.jvp(lambda q: run(q, i, forward), (s,), (jnp.ones_like(s),))),
        ]
    cases += [
        ("pure JAX: forward step", lambda s, i: run(s, i, custom)),
        ("pure JAX: value and gradient, custom VJP", jax.value_and_grad(lambda s, i: run(s, i, custom))),
        ("pure JAX: value and gradient, JAX autodiff", jax.value_and_grad(lambda s, i: run(s, i, plain))),
        ("pure JAX: forward mode, one tangent",
         lambda s, i: jax.jvp(lambda q: run(q, i, plain), (s,), (jnp.ones_like(s),))),
    ]
    rows = [(name, per_step_ms(fn, (sigma, idx), args.steps)) for name, fn in cases]
    custom.defvjp(energy._pair_rows_fwd, stub_backward)  # this process only
    jax.clear_caches()
    try:
        rows.append(("pure JAX: value and gradient, stub pair backward",
                     per_step_ms(jax.value_and_grad(lambda s, i: run(s, i, custom)), (sigma, idx), args.steps)))
    finally:
        custom.defvjp(energy._pair_rows_fwd, energy._pair_rows_bwd)
    forward_ms = {name.split(":")[0]: ms for name, ms in rows if name.endswith("forward step")}
    print(f"| N = {args.atoms}, {args.steps} steps | ms per step | × its forward step |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} | {ms / forward_ms[name.split(':')[0]]:.2f} |")


if __name__ == "__main__":
    main()
