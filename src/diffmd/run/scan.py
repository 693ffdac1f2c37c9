"""Scans over steps with the memory strategy of a gradient mode."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .state_scan import state_scan


def segment_steps(n_steps: int, requested: int | None) -> int:
    """Steps per checkpointed segment: √T by default (memory O(√T) in the number of steps)."""
    if requested is not None:
        return max(1, int(requested))
    return max(1, math.isqrt(max(n_steps, 1) - 1) + 1)


class Rows(NamedTuple):
    """What a reverse pass needs to run without storing neighbor rows (`state_scan`)."""

    rebuild: Callable  # reference coords -> the rows a build from them gives
    replay: Callable  # the step, using the list it is given (no update): step(state, _)


def scan(body, carry, length: int, mode: str, items_per_segment: int = 1, rows: Rows | None = None):
    """`lax.scan(body, carry, None, length)` with the memory strategy of `mode`.

    "checkpointed": the items are grouped into segments of `items_per_segment`; only the carry
    at each segment boundary is kept for the backward pass and a segment is recomputed (with
    its intermediate values stored) when its turn comes. Outputs are stacked as usual.
    `rows` (scans over single steps with a neighbor list, no outputs): the stored
    intermediate states leave out the list's rows, which the backward pass restores
    (`state_scan`), instead of storing 0.8 MB of rows per step at N = 1000.
    """
    if length == 0:
        return carry, None
    if rows is not None:
        plain = lambda c, n: (state_scan(lambda s: body(s, None)[0], lambda s: rows.replay(s, None)[0],  # noqa: E731
                                         c, n, rows.rebuild), None)
    else:
        plain = lambda c, n: jax.lax.scan(body, c, None, length=n)  # noqa: E731
    if mode != "checkpointed":
        return plain(carry, length)
    k = min(items_per_segment, length)
    n_segments, remainder = divmod(length, k)

    @jax.checkpoint
    def segment(c, _):
        return plain(c, k)

    carry, outs = jax.lax.scan(segment, carry, None, length=n_segments)
    if outs is not None:
        outs = jax.tree_util.tree_map(lambda o: o.reshape((n_segments * k,) + o.shape[2:]), outs)
    if remainder:
        carry, tail = jax.checkpoint(lambda c: plain(c, remainder))(carry)
        if outs is not None:
            outs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outs, tail)
    return carry, outs
