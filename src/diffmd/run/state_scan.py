"""A scan over MD steps whose reverse pass stores each step's state, but not its neighbor list.

Plain `lax.scan` reverse mode stores every step's residuals, and the neighbor rows (N, K) int32
are one of them: 0.8 MB per step at N = 1000, written in the forward pass and read back in the
backward pass, step after step, although the list changes only every few tens of steps. That
memory traffic cost as much as the backward pair kernel itself (measured in docs/performance.md).

`state_scan` has a custom VJP instead. Its forward pass stores the states entering each step
with the list's rows removed (coordinates, velocities, forces, … and the list's reference
coordinates), plus the rows of the first and last list. The backward pass walks the steps in
reverse, one list interval at a time, and restores the rows each interval used: the last
list's rows, the first list's when the reference coordinates match it, else a rebuild from
the stored reference coordinates — a build is a deterministic function of them, so the rows
are the same ones (rare: a stretch between records is shorter than a list's lifetime). Each step's cotangents then come from `jax.vjp` of the step itself (the forward pair
kernel in it is dead code: its reverse pass needs only the coordinates).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp


def _without_rows(state):
    return eqx.tree_at(lambda s: s.neighbors.idx, state, None)


def _with_rows(state, idx):
    return eqx.tree_at(lambda s: s.neighbors.idx, state, idx, is_leaf=lambda x: x is None)


def _zeros_like_tree(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def _add_trees(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


class _Codec:
    """The state as (float leaves, other leaves as float bit patterns) and back.

    The custom VJP sees float arrays only: an integer output that is the same in every replica
    (the step counter) reaches a custom VJP under vmap with a cotangent JAX cannot batch
    (jax 0.12), while a float one gets a symbolic zero. Bit casts are exact both ways.
    """

    def __init__(self, state):
        floats, others = eqx.partition(state, eqx.is_inexact_array)
        leaves, self.treedef = jax.tree_util.tree_flatten(others)
        self.dtypes = [leaf.dtype for leaf in leaves]
        self.key_impls = [jax.random.key_impl(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else None
                          for leaf in leaves]

    @staticmethod
    def _to_bits(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if leaf.dtype.itemsize < 4:
            leaf = leaf.astype(jnp.int32)
        float_type = {4: jnp.float32, 8: jnp.float64}[leaf.dtype.itemsize]
        return jax.lax.bitcast_convert_type(leaf, float_type)

    @staticmethod
    def _from_bits(bits, dtype, key_impl):
        if key_impl is not None:
            return jax.random.wrap_key_data(jax.lax.bitcast_convert_type(bits, jnp.uint32), impl=key_impl)
        if dtype.itemsize < 4:
            return jax.lax.bitcast_convert_type(bits, jnp.int32).astype(dtype)
        return jax.lax.bitcast_convert_type(bits, dtype)

    def pack(self, state):
        floats, others = eqx.partition(state, eqx.is_inexact_array)
        return floats, [self._to_bits(leaf) for leaf in jax.tree_util.tree_leaves(others)]

    def unpack(self, packed):
        floats, bits = packed
        others = self.treedef.unflatten([self._from_bits(*args) for args in zip(bits, self.dtypes, self.key_impls)])
        return eqx.combine(floats, others)


def state_scan(step, replay, state, length: int, rebuild_rows):
    """`lax.scan` of `step(state) -> state` for `length` steps (final state), with the reverse
    pass described above. `replay(state) -> state` is the same step using the list it is
    given as it is (the backward pass hands each step the list it used: no displacement check,
    no rebuild, no copy of the rows); `rebuild_rows(reference_coords) -> idx` rebuilds a
    list's rows."""
    codec = _Codec(state)
    step_fn, consts = jax.closure_convert(step, state)
    replay_fn, replay_consts = jax.closure_convert(replay, state)
    rebuild_fn, rebuild_consts = jax.closure_convert(rebuild_rows, state.neighbors.reference_coords)
    return codec.unpack(_scan(step_fn, replay_fn, rebuild_fn, codec, length, codec.pack(state), consts,
                              replay_consts, rebuild_consts))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _scan(step_fn, replay_fn, rebuild_fn, codec, length, packed, consts, replay_consts, rebuild_consts):
    state = codec.unpack(packed)
    return codec.pack(jax.lax.scan(lambda s, _: (step_fn(s, *consts), None), state, None, length=length)[0])


def _scan_fwd(step_fn, replay_fn, rebuild_fn, codec, length, packed, consts, replay_consts, rebuild_consts):
    state = codec.unpack(packed)
    final, entering = jax.lax.scan(lambda s, _: (step_fn(s, *consts), _without_rows(s)), state, None, length=length)
    residuals = (entering, state.neighbors.idx, final.neighbors.idx, final.neighbors.reference_coords,
                 consts, replay_consts, rebuild_consts, packed[1])
    return codec.pack(final), residuals


def _scan_bwd(step_fn, replay_fn, rebuild_fn, codec, length, residuals, final_bar):
    entering, first_rows, last_rows, last_reference, consts, replay_consts, rebuild_consts, bits = residuals
    final_bar = final_bar[0]  # the float leaves' cotangents (the bit patterns have none)
    # Step t computes its forces with the list its update returns, ℓ_{t+1}: the list entering
    # step t+1 (the last list for the last step). Given that list as its input, the step's
    # update finds nothing to rebuild, so the backward pass builds no list a forward step built.
    entering_refs = entering.neighbors.reference_coords  # (L, N, D): ℓ_t
    used_refs = jnp.concatenate([entering_refs[1:], last_reference[None]])  # ℓ_{t+1}
    switch_before = jnp.concatenate(  # step t−1 used another list than step t
        [jnp.zeros((1,), bool), jnp.any(used_refs[1:] != used_refs[:-1], axis=tuple(range(1, used_refs.ndim)))])
    consts_diff, consts_static = eqx.partition(replay_consts, eqx.is_inexact_array)

    def rows_of(reference):
        return jax.lax.cond(jnp.array_equal(reference, entering_refs[0]), lambda: first_rows,
                            lambda: rebuild_fn(reference, *rebuild_consts))

    def step_back(t, rows, state_bar, consts_bar):
        stored = jax.tree_util.tree_map(lambda a: a[t], entering)
        state = eqx.tree_at(lambda s: s.neighbors.reference_coords, _with_rows(stored, rows), used_refs[t])
        diff, static = eqx.partition(state, eqx.is_inexact_array)

        def differentiable_step(diff, consts_diff):
            out = replay_fn(eqx.combine(diff, static), *eqx.combine(consts_diff, consts_static))
            return eqx.filter(out, eqx.is_inexact_array)

        _, pullback = jax.vjp(differentiable_step, diff, consts_diff)
        state_bar, step_consts_bar = pullback(state_bar)
        return state_bar, _add_trees(consts_bar, step_consts_bar)

    # Steps go back interval by interval (an interval: consecutive steps on one list). The
    # rows are chosen once per interval and stay loop-invariant over its steps: a per-step
    # choice (a conditional on the rows) made XLA copy them every step.
    def interval(carry):
        t, rows, state_bar, consts_bar = carry
        rows = jax.lax.cond(t < length - 1, lambda: rows_of(used_refs[t]), lambda: rows)

        def inner(c):
            t, state_bar, consts_bar, _ = c
            state_bar, consts_bar = step_back(t, rows, state_bar, consts_bar)
            return t - 1, state_bar, consts_bar, (t > 0) & ~switch_before[t]

        t, state_bar, consts_bar, _ = jax.lax.while_loop(lambda c: c[3], inner, (t, state_bar, consts_bar, True))
        return t, rows, state_bar, consts_bar

    init = (jnp.int32(length - 1), last_rows, final_bar, _zeros_like_tree(consts_diff))
    _, _, state_bar, consts_bar = jax.lax.while_loop(lambda c: c[0] >= 0, interval, init)
    consts_bar = eqx.combine(consts_bar, _zeros_like_tree(consts_static))
    return (state_bar, _zeros_like_tree(bits)), _zeros_like_tree(consts), consts_bar, _zeros_like_tree(rebuild_consts)


# generic_batching: under vmap a shared (unbatched) output, e.g. a list not rebuilt in any
# replica, may meet batched cotangents; the rule is exact per example, so JAX may run it so.
_scan.defvjp(_scan_fwd, _scan_bwd, generic_batching=True)
