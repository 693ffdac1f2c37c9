"""The pure-JAX pair kernel over dense neighbor rows: the reference every compiled kernel is
tested against, the path on GPUs, and the fallback wherever no compiler exists.

Row i of an (N, K) index array lists the neighbors of atom i (every pair appears in both
rows), coordinates are gathered component by component (structure-of-arrays, which vectorises
on CPUs), and the force on atom i is the row sum of s·d with d = x_j − x_i and s = V'(r)/r —
exactly −∇E. No scatter-add is needed.

The pair function is fused: `vs(r, θ_i, θ_j, g) -> (V, s)` sums every pairwise term that
shares the rows, with θ the per-atom parameters (tuples of arrays) and g the parameters shared
by all pairs (a tuple of scalars).

For reverse mode the kernel has a custom VJP that uses the same gathers: the Hessian of a pair
potential is symmetric and every pair appears in both rows, so the cotangent of the coordinates
(and of per-atom parameters) is a row sum of terms in (λ_i − λ_j) — see `_bwd`. That avoids the
scatter-adds plain autodiff would produce, and the backward pass stores only the kernel's
inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _rows(x, idx):
    """Row atoms' coordinates (D, N, 1), their neighbors' (D, N, K), the valid slots and the
    padding-safe indices."""
    n = x.shape[0]
    valid = idx < n
    safe_idx = jnp.where(valid, idx, 0)
    x_t = x.T
    return x_t[:, :, None], x_t[:, safe_idx], valid, safe_idx


def _sides(params, safe_idx):
    return tuple(p[:, None] for p in params), tuple(p[safe_idx] for p in params)


def _plain(vs, x, boundary, params, globals_, idx):
    xi, xj, valid, safe_idx = _rows(x, idx)
    d = boundary.vector_components(xi, xj)
    r2 = jnp.sum(d * d, axis=0)
    positive = r2 > 0
    r = jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)  # coincident: 0, zero gradient
    r = jnp.where(valid, r, 1.0)  # padding slots: a harmless distance, masked below
    p_i, p_j = _sides(params, safe_idx)
    energy, scale = vs(r, p_i, p_j, globals_)
    energy = jnp.where(valid, energy, 0.0)
    f = jnp.where(valid & positive, scale, 0.0)[None] * d  # on the row atom: s·d (repulsion pushes i away)
    return 0.5 * jnp.sum(energy), jnp.sum(f, axis=2).T.astype(x.dtype)


def row_kernel(vs, reverse: bool):
    """(x, boundary, params, globals, idx) -> (energy, forces (N, D)) for the pair function
    `vs`; with `reverse`, the gather-only custom reverse pass (no forward mode through it)."""
    if not reverse:
        return lambda *args: _plain(vs, *args)

    @jax.custom_vjp
    def kernel(x, boundary, params, globals_, idx):
        return _plain(vs, x, boundary, params, globals_, idx)

    def fwd(x, boundary, params, globals_, idx):
        return _plain(vs, x, boundary, params, globals_, idx), (x, boundary, params, globals_, idx)

    def bwd(residuals, cotangents):
        """With E = ½ Σ_i Σ_j V_ij and F_i = Σ_j f_ij, and every pair in both rows (V_ij = V_ji,
        f_ij = −f_ji), differentiating each row only through its own atom (x_i, θ_i) with
        cotangents (Ē, μ = λ_i − λ_j) gives the exact cotangents of x and of the per-atom
        parameters; parameters shared by all pairs (box, g) get half of it.

        Per pair the row's contribution is ℒ = Ē·V(r) + (μ·d)·s(r), so
        ∂ℒ/∂d = s·μ + (Ē V' + (μ·d) s') d/r  and  x̄_i = −Σ_j ∂ℒ/∂d.
        V', s' and the parameter cotangents come from one elementwise VJP of (V, s)(r, θ_i, g).
        """
        x, boundary, params, globals_, idx = residuals
        e_bar, f_bar = cotangents
        xi, xj, valid, safe_idx = _rows(x, idx)
        d = boundary.vector_components(xi, xj)
        r2 = jnp.sum(d * d, axis=0)
        ok = valid & (r2 > 0)
        r = jnp.sqrt(jnp.where(ok, r2, 1.0))
        lam = f_bar.T.astype(x.dtype)
        mu = jnp.where(ok[None], lam[:, :, None] - lam[:, safe_idx], 0.0)
        mu_d = jnp.sum(mu * d, axis=0)
        p_i, p_j = _sides(params, safe_idx)
        (_, scale), vjp = jax.vjp(lambda rr, pi, g: vs(rr, pi, p_j, g), r, p_i, globals_)
        okf = ok.astype(r.dtype)
        r_bar, p_i_bar, g_bar = vjp((okf * jnp.asarray(e_bar, r.dtype), okf * mu_d))
        d_bar = jnp.where(ok[None], scale * mu + (r_bar / r) * d, 0.0)
        _, box_vjp = jax.vjp(lambda b: b.vector_components(xi, xj), boundary)
        (boundary_bar,) = box_vjp(d_bar)
        half = lambda tree: jax.tree_util.tree_map(lambda g: 0.5 * g, tree)  # noqa: E731
        x_bar = -jnp.sum(d_bar, axis=2).T.astype(x.dtype)
        params_bar = tuple(g[:, 0] for g in p_i_bar)
        return x_bar, half(boundary_bar), params_bar, half(g_bar), None

    kernel.defvjp(fwd, bwd)
    return kernel
