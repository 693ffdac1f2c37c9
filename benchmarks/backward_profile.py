"""Where the backward time goes: a bare scan of velocity-Verlet steps (N = 1000 LJ argon,
fixed neighbor list, float32), forward vs value-and-gradient (diffmd's custom VJP, JAX's own
autodiff), one forward-mode tangent, and the gradient with the pair kernel's backward pass
replaced by a cheap stub (what everything else costs).

    .venv/bin/python benchmarks/backward_profile.py
"""
import time, sys, jax, jax.numpy as jnp, numpy as np, equinox as eqx
import diffmd as md
from diffmd import energy as E
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent)); import gradient_memory as gm
import importlib; S = importlib.import_module("diffmd.simulate")
n = 1000; T = 50
s = gm.make_system(n, gm.SIGMA)
cap = S._choose_capacity(s)
nl = s.neighbor_finder.build(s.coords, s.boundary, s.excluded_pairs().array, cap)
inter = s.pairwise_inters[0]; b = s.boundary
dt = 0.002; m = 39.948
def run(sig, idx, mode):
    atoms = md.Atoms.uniform(n, mass=gm.MASS, sigma=sig, epsilon=gm.EPSILON, dtype=jnp.float32)
    kern = E._pair_rows if mode == "sym" else E._pair_rows_plain
    def body(c, _):
        x, v, f = c
        vh = v + 0.5 * dt * f / m
        x = x + dt * vh
        e, f = kern(x, b, atoms, inter, idx)
        v = vh + 0.5 * dt * f / m
        return (x, v, f), e
    e0, f0 = kern(s.coords, b, atoms, inter, idx)
    (x, v, f), es = jax.lax.scan(body, (s.coords, s.velocities, f0), None, length=T)
    return jnp.mean(es) / n
def bench(name, f, *a, reps=5):
    c = jax.jit(f).lower(*a).compile(); r = c(*a); jax.block_until_ready(r)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); r = c(*a); jax.block_until_ready(r); ts.append(time.perf_counter() - t)
    print(f"{name:40s} {np.min(ts)*1e3/T:7.3f} ms/step", flush=True)
s0 = jnp.float32(gm.SIGMA)
bench("fwd scan", lambda sg, i: run(sg, i, "sym"), s0, nl.idx)
bench("value_and_grad scan (custom vjp)", jax.value_and_grad(lambda sg, i: run(sg, i, "sym")), s0, nl.idx)
bench("value_and_grad scan (plain autodiff)", jax.value_and_grad(lambda sg, i: run(sg, i, "plain")), s0, nl.idx)
bench("jvp scan", lambda sg, i: jax.jvp(lambda q: run(q, i, "plain"), (sg,), (1.0,)), s0, nl.idx)
def make_bwd():
    """A stub backward pass: the cotangents it returns are cheap, so only the rest is timed."""
    def bwd(residuals, cotangents):
        x, boundary, atoms, inter, idx = residuals
        e_bar, f_bar = cotangents
        zeros = lambda t: jax.tree_util.tree_map(
            lambda a: jnp.zeros_like(a) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact) else None, t)
        depends = (jnp.sum(f_bar) + e_bar) * 1e-12  # keep the backward pass alive (no DCE)
        atoms_bar = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) + depends.astype(a.dtype), atoms)
        return (1e-9 * f_bar.astype(x.dtype), zeros(boundary), atoms_bar, zeros(inter), None)
    return bwd
E._pair_rows.defvjp(E._pair_rows_fwd, make_bwd()); jax.clear_caches()
bench("value_and_grad, stub pair backward", jax.value_and_grad(lambda sg, i: run(sg, i, "sym")), s0, nl.idx)
