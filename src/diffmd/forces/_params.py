"""Small helpers for the parameters of batched bonded terms."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def float_array(x) -> Array:
    """A float array (integers become the default float type)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def scalars(*values) -> list[Array]:
    """Parameters of a one-term constructor, each a scalar."""
    out = [jnp.asarray(v) for v in values]
    for v in out:
        if v.ndim != 0:
            raise ValueError(f"one-term constructors take scalar parameters, got shape {v.shape}; "
                             "use the batched class (e.g. HarmonicBonds) for several terms")
    return out


def like(x: Array, positions: Array) -> Array:
    """A parameter in the dtype of the coordinates (float32 coordinates stay float32)."""
    return x.astype(positions.dtype)
